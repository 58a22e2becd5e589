//! The root's SIGINT and SIGTERM: the first starts a graceful shutdown of the whole tree, the
//! second forces it. The handlers only write a byte to a socket the service threads watch
//! (the self-pipe trick), so all the work happens in the broker loop.

use std::io;
use std::os::unix::net::UnixStream;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

/// Installed handlers; dropping this removes them (and closes their write ends).
#[derive(Debug)]
pub(crate) struct Interrupts {
    ids: Vec<SigId>,
}

impl Interrupts {
    /// Installs the handlers; returns them and the socket to read wake-ups from.
    pub fn install() -> io::Result<(Interrupts, UnixStream)> {
        let (read, write) = UnixStream::pair()?;
        let mut ids = Vec::new();
        for signal in [SIGINT, SIGTERM] {
            match signal_hook::low_level::pipe::register(signal, write.try_clone()?) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    drop(Interrupts { ids });
                    return Err(e);
                }
            }
        }
        Ok((Interrupts { ids }, read))
    }

    fn remove(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.remove();
    }
}
