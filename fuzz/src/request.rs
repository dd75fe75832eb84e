//! The `request` target: raw bytes sent to the HTTP service over loopback, as a client on the
//! network would send them (headers, bodies, multipart, chunked encoding), with a token set.
//! A 500 is a crash like a panic: the service must answer every request with a clear 4xx or a
//! 503 when it sheds load.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use image::ImageFormat;
use rekindle_infer::Classifier;
use rekindle_infer::auth::Token;
use rekindle_infer::batcher::Batcher;
use rekindle_infer::server::{App, serve};

/// The token the fuzzed service wants; seeds carry it, mutations break it.
const TOKEN: &str = "fuzz-token-0123456789";

/// A service on a loopback port, running on its own threads for the life of the worker.
pub struct Service {
    addr: SocketAddr,
    png: Vec<u8>,
    _runtime: tokio::runtime::Runtime,
}

impl Service {
    /// Starts the service on 127.0.0.1 over a small model written to `dir`.
    pub fn start(dir: &Path) -> Result<Self, String> {
        let path = dir.join("service.bpk");
        std::fs::write(&path, crate::targets::model_file_bytes(dir)).map_err(|e| e.to_string())?;
        let device = crate::targets::device();
        let classifier = Classifier::load(&path, &device).map_err(|e| e.to_string())?;
        let metadata = classifier.metadata().clone();
        let limits = rekindle_infer::Limits {
            max_bytes: 256 << 10,
            ..rekindle_infer::Limits::default()
        };
        let (batcher, _model_thread) = Batcher::spawn(
            classifier.with_limits(limits),
            4,
            Duration::from_millis(1),
            16,
        );
        let mut app = App::new(batcher, metadata, limits);
        app.token = Some(Token::new(TOKEN, "fuzz").map_err(|e| e.to_string())?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| e.to_string())?;
        runtime.spawn(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) {
                let _ = serve(listener, Arc::new(app), std::future::pending()).await;
            }
        });
        let png = crate::images::seeds(ImageFormat::Png).swap_remove(0);
        Ok(Self {
            addr,
            png,
            _runtime: runtime,
        })
    }

    /// Requests of every shape the service takes, each valid.
    pub fn seeds(&self) -> Vec<Vec<u8>> {
        let auth = format!("Authorization: Bearer {TOKEN}\r\n");
        let raw = |path: &str, headers: &str, body: &[u8]| {
            let mut r = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}{headers}Content-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        };
        let boundary = "XyZ";
        let mut form = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\
             Content-Type: image/png\r\n\r\n"
        )
        .into_bytes();
        form.extend_from_slice(&self.png);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let mut chunked = format!(
            "POST /v1/predict HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: image/png\r\n\
             Transfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            self.png.len()
        )
        .into_bytes();
        chunked.extend_from_slice(&self.png);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        vec![
            format!("GET /v1/model HTTP/1.1\r\nHost: x\r\n{auth}\r\n").into_bytes(),
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            raw("/v1/predict", "Content-Type: image/png\r\n", &self.png),
            raw("/v1/predict?top_k=2", "", &self.png),
            raw(
                "/v1/predict",
                &format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
                &form,
            ),
            chunked,
        ]
    }

    /// Sends `input` on a fresh connection and reads the answer: `Ok` for a 2xx, `Err` with
    /// the status line for a refusal or a closed connection. A 500 panics: it is a crash.
    pub fn send(&self, input: &[u8]) -> Result<(), String> {
        let mut stream =
            TcpStream::connect(self.addr).map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(8)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(8)));
        // The server may answer and close before reading it all: that is its right.
        let _ = stream.write_all(input);
        let _ = stream.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        let _ = stream.take(64 << 10).read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        let status_line = text.lines().next().unwrap_or("").to_string();
        let code: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        match code {
            200..=299 => Ok(()),
            500 => panic!("the service answered `{status_line}`: {text}"),
            0 if answer.is_empty() => Err("connection closed without an answer".into()),
            0 => Err(format!("not an HTTP answer: {status_line}")),
            _ => Err(status_line),
        }
    }
}
