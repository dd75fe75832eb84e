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
use rekindle_infer::app::App;
use rekindle_infer::auth::Token;
use rekindle_infer::batcher::Batcher;
use rekindle_infer::server::serve;

/// The token the fuzzed service wants; seeds carry it, mutations break it.
const TOKEN: &str = "fuzz-token-0123456789";

/// A POST of `body` to `path` with the token, extra `headers` (each ending in CRLF) and its length.
fn post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{headers}\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A service on a loopback port, running on its own threads for the life of the worker.
pub struct Service {
    addr: SocketAddr,
    png: Vec<u8>,
    crop: usize,
    _runtime: tokio::runtime::Runtime,
}

impl Service {
    /// Starts the service on 127.0.0.1 over a small model written to `dir`.
    pub fn start(dir: &Path) -> Result<Self, String> {
        let path = dir.join("service.bpk");
        std::fs::write(&path, crate::seed_model::model_file_bytes(dir))
            .map_err(|e| e.to_string())?;
        let device = crate::seed_model::device();
        let classifier = Classifier::load(&path, &device).map_err(|e| e.to_string())?;
        let metadata = classifier.metadata().clone();
        let crop = metadata.preprocess.crop;
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
            crop,
            _runtime: runtime,
        })
    }

    /// Requests of every shape the service takes, each valid.
    pub fn seeds(&self) -> Vec<Vec<u8>> {
        let auth = format!("Authorization: Bearer {TOKEN}\r\n");
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
            post("/v1/predict", "Content-Type: image/png\r\n", &self.png),
            post("/v1/predict?top_k=2", "", &self.png),
            post(
                "/v1/predict",
                &format!("Content-Type: multipart/form-data; boundary={boundary}\r\n"),
                &form,
            ),
            chunked,
            format!("GET /v2/models/model HTTP/1.1\r\nHost: x\r\n{auth}\r\n").into_bytes(),
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}\r\n").into_bytes(),
        ]
        .into_iter()
        .chain(self.oip_seeds())
        .collect()
    }

    /// Open Inference Protocol requests: an FP32 tensor as JSON and as binary data, and the
    /// PNG as a binary BYTES tensor, with outputs and parameters.
    fn oip_seeds(&self) -> Vec<Vec<u8>> {
        let path = "/v2/models/model/infer";
        let n = 3 * self.crop * self.crop;
        let values: Vec<String> = (0..n)
            .map(|i| format!("{:.2}", (i % 7) as f32 * 0.1))
            .collect();
        let json = format!(
            r#"{{"id":"a","inputs":[{{"name":"input","shape":[1,3,{c},{c}],"datatype":"FP32","data":[{}]}}],"outputs":[{{"name":"logits"}},{{"name":"classes"}}],"parameters":{{"top_k":1}}}}"#,
            values.join(","),
            c = self.crop
        );
        let binary = |head: String, data: &[u8]| {
            let mut body = head.clone().into_bytes();
            body.extend_from_slice(data);
            post(
                path,
                &format!("Inference-Header-Content-Length: {}\r\n", head.len()),
                &body,
            )
        };
        let floats: Vec<u8> = (0..n)
            .flat_map(|i| (i as f32 * 1e-3).to_le_bytes())
            .collect();
        let fp32 = format!(
            r#"{{"inputs":[{{"name":"input","shape":[1,3,{c},{c}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"probabilities","parameters":{{"binary_data":true,"classification":1}}}}]}}"#,
            floats.len(),
            c = self.crop
        );
        let mut element = (self.png.len() as u32).to_le_bytes().to_vec();
        element.extend_from_slice(&self.png);
        let bytes = format!(
            r#"{{"inputs":[{{"name":"image","shape":[1],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}],"parameters":{{"binary_data_output":true}}}}"#,
            element.len()
        );
        vec![
            post(path, "Content-Type: application/json\r\n", json.as_bytes()),
            binary(fp32, &floats),
            binary(bytes, &element),
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
