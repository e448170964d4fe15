//! Switching to an unprivileged user after the ports are bound.
//!
//! ftpgate binds every listener first (port 21 and the passive range may need
//! root or CAP_NET_BIND_SERVICE), then, if `user` is set, sets the
//! supplementary groups, the group and the user, in that order, for the whole
//! process (glibc applies set*id to every thread).

use nix::unistd::{Gid, Group, Uid, User};

/// Finds a user by name or numeric uid.
pub fn lookup_user(name: &str) -> nix::Result<Option<User>> {
    match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    }
}

/// Finds a group by name or numeric gid.
pub fn lookup_group(name: &str) -> nix::Result<Option<Group>> {
    match name.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(name),
    }
}

/// Why switching user failed.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// The account vanished between validation and start.
    #[error("setting `{key}`: no such account `{name}`")]
    Unknown {
        /// `user` or `group`.
        key: &'static str,
        /// The name.
        name: String,
    },
    /// A set*id call failed (ftpgate not started as root?).
    #[error("setting `user`: cannot switch to {name} (uid {uid}, gid {gid}): {source}")]
    Switch {
        /// The user.
        name: String,
        /// Target uid.
        uid: u32,
        /// Target gid.
        gid: u32,
        /// The OS error.
        source: nix::Error,
    },
}

/// Switches the process to `user` (and `group`, else the user's primary
/// group). Returns the uid and gid now in effect.
pub fn drop_to(user: &str, group: Option<&str>) -> Result<(u32, u32), DropError> {
    let unknown = |key, name: &str| DropError::Unknown {
        key,
        name: name.to_owned(),
    };
    let u = lookup_user(user)
        .ok()
        .flatten()
        .ok_or_else(|| unknown("user", user))?;
    let gid = match group {
        Some(g) => {
            lookup_group(g)
                .ok()
                .flatten()
                .ok_or_else(|| unknown("group", g))?
                .gid
        }
        None => u.gid,
    };
    let switch = |source| DropError::Switch {
        name: u.name.clone(),
        uid: u.uid.as_raw(),
        gid: gid.as_raw(),
        source,
    };
    nix::unistd::setgroups(&[gid]).map_err(switch)?;
    nix::unistd::setgid(gid).map_err(switch)?;
    nix::unistd::setuid(u.uid).map_err(switch)?;
    Ok((u.uid.as_raw(), gid.as_raw()))
}
