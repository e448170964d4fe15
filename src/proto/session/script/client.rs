//! The simulated client: what it sends, one to three commands in one
//! piece, or a data setup and a transfer pipelined (with QUIT in the middle
//! or at the end), each command recorded for the checks on what reaches the
//! backend and the client.

use super::{Cmd, Sim, Source, Violation};

impl<S: Source> Sim<'_, S> {
    pub(super) fn push_cmd(&mut self, line: Vec<u8>) -> usize {
        let idx = self.next_cmd;
        self.next_cmd += 1;
        if self.auth_pending {
            self.after_auth.push(idx);
        }
        self.fifo.push_back(Cmd {
            idx,
            line,
            forwarded: false,
            backend_answered: false,
            discarded: false,
            transfer: None,
        });
        idx
    }

    /// The client sends one to three commands in one piece (when the
    /// driver would read it).
    pub(super) fn client_sends(&mut self) -> Result<(), Violation> {
        if !self.ctl.wants_client() {
            return Ok(());
        }
        let n = 1 + self.src.pick(3);
        let mut lines = Vec::new();
        for _ in 0..n {
            // The index this command will have (lines must differ).
            let k = self.next_cmd + lines.len();
            let line: Vec<u8> = match self.src.pick(40) {
                0 => format!("USER u{k}").into(),
                1 => format!("PASS p{k}").into(),
                2 | 3 => b"PASV".to_vec(),
                4 | 5 => b"EPSV".to_vec(),
                6 => b"PORT 192,0,2,7,40,1".to_vec(),
                7 => b"PORT 203,0,113,9,40,1".to_vec(),
                8 => b"EPRT |1|192.0.2.7|10241|".to_vec(),
                9 | 10 | 24..=29 => format!("RETR f{k}").into(),
                11 | 30 | 31 => format!("STOR f{k}").into(),
                12 | 32 | 33 => format!("LIST d{k}").into(),
                34..=37 => b"PASV".to_vec(),
                13 => b"ABOR".to_vec(),
                14 => b"AUTH TLS".to_vec(),
                15 => b"PBSZ 0".to_vec(),
                16 => b"PROT P".to_vec(),
                17 => format!("TYPE A N{k}").into(),
                18 if self.src.pick(3) == 0 => b"QUIT".to_vec(),
                19 => b"FEAT".to_vec(),
                20 => b"EPSV ALL".to_vec(),
                21 => vec![b'X'; 100],
                22 => b"REIN".to_vec(),
                23 => b"PROT C".to_vec(),
                _ => format!("NOOP n{k}").into(),
            };
            lines.push(line);
        }
        self.send_piece(lines);
        Ok(())
    }

    /// A data setup and a transfer in one piece, before the 227 can
    /// arrive, now and then with QUIT in the middle or at the end (or a
    /// NOOP first, so the setup also waits for an earlier reply).
    pub(super) fn client_pipelines_a_transfer(&mut self) -> Result<(), Violation> {
        if !self.ctl.wants_client() {
            return Ok(());
        }
        let k = self.next_cmd;
        let setup: &[u8] = match self.src.pick(4) {
            0 => b"PASV",
            1 => b"EPSV",
            2 => b"PORT 192,0,2,7,40,1",
            _ => b"EPRT |1|192.0.2.7|10241|",
        };
        let transfer: Vec<u8> = match self.src.pick(3) {
            0 => format!("RETR p{k}").into(),
            1 => format!("LIST p{k}").into(),
            _ => format!("STOR p{k}").into(),
        };
        let mut lines = vec![setup.to_vec(), transfer];
        match self.src.pick(6) {
            0 => lines.insert(1, b"QUIT".to_vec()),
            1 => lines.push(b"QUIT".to_vec()),
            2 => lines.insert(0, format!("NOOP q{k}").into()),
            _ => {}
        }
        self.send_piece(lines);
        Ok(())
    }

    /// Sends `lines` in one piece.
    fn send_piece(&mut self, lines: Vec<Vec<u8>>) {
        // What followed an AUTH in an earlier piece was handled by now.
        self.after_auth.clear();
        self.auth_pending = false;
        let mut chunk = Vec::new();
        for line in lines {
            let is_auth = line == b"AUTH TLS";
            let forwarded_line = if line.len() > 64 {
                Vec::new()
            } else {
                line.clone()
            };
            self.push_cmd(forwarded_line);
            if is_auth {
                self.auth_pending = true;
            }
            chunk.extend_from_slice(&line);
            chunk.extend_from_slice(b"\r\n");
        }
        self.log(format!(
            "client: {}",
            String::from_utf8_lossy(&chunk).trim_end()
        ));
        self.ctl.client_buffer().extend_from_slice(&chunk);
        self.ctl.on_client_data(self.now);
    }
}
