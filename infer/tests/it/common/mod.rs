//! Shared by the CLI and service tests: a small model file, images to predict, raw HTTP
//! requests and a running `serve` process.

#![allow(dead_code)]

// Train's test helpers (a test helper cannot be a dependency): the backends a test runs on, and
// weights drawn on the CPU.
#[path = "../../../../train/tests/it/common/backends.rs"]
pub mod backends;
pub mod service;
#[path = "../../../../train/tests/it/common/weights.rs"]
pub mod weights;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use rekindle_model::burn::tensor::Device;
use rekindle_model::{Arch, HeadConfig, ModelMetadata, Preprocess, ResNetConfig, save_model};

/// Writes a random ResNet-18 with classes red/green/blue for 24x24 inputs to `path`: the same
/// weights every time (drawn from a seed of their own, not the device's generator, which the
/// tests running beside this one draw from too).
pub fn model_file(path: &Path) {
    let device = Device::flex();
    let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3));
    let net = weights::drawn(config.init(&device), 13, 0.0);
    let pre = Preprocess {
        resize: 28,
        crop: 24,
        ..Preprocess::imagenet()
    };
    let names = ["red", "green", "blue"].map(String::from).to_vec();
    save_model(path, &net, &ModelMetadata::new(config, names, pre)).unwrap();
}

/// A distinct test image for each `i`.
pub fn image(i: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(32 + i % 7, 30 + i % 5, |x, y| {
        Rgb([
            (x * 7 + i * 37) as u8,
            (y * 5 + i * 11) as u8,
            ((x ^ y) * 3 + i * 53) as u8,
        ])
    }))
}

/// `img` encoded as `format`.
pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), its raw answer. The body is
/// written from another thread so that a server refusing it early still gets its answer read.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut w = s.try_clone().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let _ = writer.join();
    raw
}
