//! A minimal HTTP/1.1 server on 127.0.0.1 that returns one HTML page, so
//! Chromium loads the test page from a secure context (`http://127.0.0.1`).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Path the page is served at. Every other path returns 404.
const PAGE_PATH: &str = "/page.html";
/// Maximum size of a request head, far above Chromium's GET heads.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Maximum time a connection may stay idle before its request head is complete.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Page server running as a tokio task; dropping it stops the task.
pub struct PageServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl PageServer {
    /// Binds a free port on 127.0.0.1 and serves `page` at [`PAGE_PATH`].
    pub async fn start(page: &'static str) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, page).await {
                        eprintln!("page server connection failed: {error}");
                    }
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// URL of the page, e.g. `http://127.0.0.1:40211/page.html`.
    pub fn url(&self) -> String {
        format!("http://{}{PAGE_PATH}", self.addr)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head and writes the response, then closes the connection.
async fn serve(mut stream: TcpStream, page: &str) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head exceeds 16 KiB",
            ));
        }
        // Chromium opens spare connections that never send a request, so an
        // idle connection is closed without an error.
        let Ok(read) = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buffer)).await else {
            return Ok(());
        };
        let read = read?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }

    let request_line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut words = request_line.split(' ');
    let method = words.next().unwrap_or_default();
    let path = words.next().unwrap_or_default();

    let (status, content_type, body) = if method == "GET" && path == PAGE_PATH {
        ("200 OK", "text/html; charset=utf-8", page)
    } else {
        ("404 Not Found", "text/plain; charset=utf-8", "not found\n")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
