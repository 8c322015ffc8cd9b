//! An async TCP echo server: one task per connection.
//!
//! ```text
//! cargo run --example echo -- 127.0.0.1:7000
//! ```
//!
//! Prints `listening on ADDR` once it accepts connections (port 0 picks a free port).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use ioloop::{Async, IoLoop};

/// Echoes everything until the peer closes its side.
async fn echo(stream: Async<TcpStream>) -> io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read_with(|mut s| s.read(&mut buf)).await?;
        if n == 0 {
            return Ok(());
        }
        let mut sent = 0;
        while sent < n {
            sent += stream.write_with(|mut s| s.write(&buf[sent..n])).await?;
        }
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let lp = IoLoop::new()?;
    lp.block_on(async {
        let listener = Async::<TcpListener>::bind(addr.as_str())?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => ioloop::spawn(async move {
                    if let Err(e) = echo(stream).await {
                        eprintln!("{peer}: {e}");
                    }
                })
                .detach(),
                Err(e) => {
                    // EMFILE and the like: report, back off, keep serving.
                    eprintln!("accept: {e}");
                    ioloop::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })?
}
