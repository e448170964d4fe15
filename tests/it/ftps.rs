//! FTPS through ftpgate against real servers and clients (issue 4).
