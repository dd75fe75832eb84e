//! Images from the wild in an image folder: each file is trained on, skipped with a count, or
//! refused naming it, the same way in the dataset scan, the loader, `eval` and inference's
//! decoding; the EXIF orientation is applied as PIL's `exif_transpose` does, identically in
//! training and serving; a header declaring a huge image is refused before any pixel buffer.
//! Fixtures that only Pillow can write (CMYK, progressive, EXIF) are committed under
//! `tests/data/wild/` by `scripts/make_wild_images.py`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage, Rgba};
use rekindle_model::decode::Limits;
use rekindle_train::config::{BadImage, DataKind, DataSection};
use rekindle_train::data::dataset::{Dataset, ImageRef, check_file, decode_file};

use crate::common;
use common::{bin, random_model};

/// The allocator, recording the largest single request made on each thread, so that a test can
/// show that a call allocated no pixel buffer (other tests' threads do not count).
struct Largest;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// The committed fixtures.
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/wild")
}

/// Files expected to train: the fixtures that decode, and ones `image` writes here.
const TRAINED: [&str; 17] = [
    "exif-1.jpg",
    "exif-2.jpg",
    "exif-3.jpg",
    "exif-4.jpg",
    "exif-5.jpg",
    "exif-6.jpg",
    "exif-7.jpg",
    "exif-8.jpg",
    "png-exif-6.png",
    "cmyk.jpg",
    "ycck.jpg",
    "progressive.jpg",
    "palette.png",
    "palette-trns.png",
    "gray16.png",
    "rgb16.png",
    "rgba16.png",
];

/// Files the header scan leaves out, with a word of the reason each must give.
const SKIPPED: [(&str, &str); 6] = [
    ("empty.png", "empty (0 bytes)"),
    ("huge.png", "100000x100000"),
    ("huge.jpg", "60000x50000"),
    ("text.jpg", "not an image"),
    ("loop.png", "symbolic links"),
    ("dangling.png", "No such file"),
];

/// Files whose header is sound but whose data is cut short: they pass the scan and are left
/// out when their batch is built.
const TRUNCATED: [&str; 2] = ["truncated.jpg", "truncated.png"];

/// The file with a name that is not UTF-8 (a valid PNG).
fn raw_name() -> &'static OsStr {
    OsStr::from_bytes(b"caf\xe9-\xff.png")
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A picture with structure, so a truncated file loses part of it.
fn picture(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 5) as u8, (y * 7) as u8, ((x * y) % 251) as u8])
    }))
}

/// Writes every wild file into `dir`.
fn wild_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for name in TRAINED.iter().chain(["huge.png", "huge.jpg"].iter()) {
        let src = fixtures().join(name);
        if src.exists() {
            std::fs::copy(&src, dir.join(name)).unwrap();
        }
    }
    let gray16 = ImageBuffer::from_fn(20, 12, |x, y| Luma([(x * 3000 + y * 500) as u16]));
    DynamicImage::ImageLuma16(gray16)
        .save(dir.join("gray16.png"))
        .unwrap();
    let rgb16 = ImageBuffer::from_fn(20, 12, |x, y| {
        Rgb([(x * 3000) as u16, (y * 5000) as u16, 7])
    });
    DynamicImage::ImageRgb16(rgb16)
        .save(dir.join("rgb16.png"))
        .unwrap();
    let rgba16 = ImageBuffer::from_fn(20, 12, |x, y| {
        Rgba([
            (x * 3000) as u16,
            9,
            (y * 5000) as u16,
            (x * y * 200) as u16,
        ])
    });
    DynamicImage::ImageRgba16(rgba16)
        .save(dir.join("rgba16.png"))
        .unwrap();
    std::fs::write(dir.join("empty.png"), b"").unwrap();
    std::fs::write(
        dir.join("text.jpg"),
        b"a caption, saved with the wrong name",
    )
    .unwrap();
    std::os::unix::fs::symlink("loop.png", dir.join("loop.png")).unwrap();
    std::os::unix::fs::symlink("gone.png", dir.join("dangling.png")).unwrap();
    let jpeg = encode(&picture(64, 48), ImageFormat::Jpeg);
    std::fs::write(dir.join("truncated.jpg"), &jpeg[..jpeg.len() * 2 / 3]).unwrap();
    let png = encode(&picture(64, 48), ImageFormat::Png);
    std::fs::write(dir.join("truncated.png"), &png[..png.len() * 2 / 3]).unwrap();
    picture(18, 14)
        .save_with_format(dir.join(raw_name()), ImageFormat::Png)
        .unwrap();
    // a folder linked back to its parent: never walked into
    std::os::unix::fs::symlink("..", dir.join("up")).unwrap();
}

/// A dataset root: `red/` holds every wild file, `green/` and `blue/` a few plain images, and
/// `again` links back to the root.
fn wild_root(root: &Path) {
    wild_files(&root.join("red"));
    for (class, c) in [("green", [20, 200, 20]), ("blue", [20, 20, 200])] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..4u8 {
            RgbImage::from_pixel(12, 12, Rgb(c.map(|v| v + i)))
                .save(dir.join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::os::unix::fs::symlink(".", root.join("again")).unwrap();
}

fn cfg(root: &Path, policy: BadImage) -> DataSection {
    DataSection {
        kind: DataKind::Folder,
        root: root.to_path_buf(),
        val_split: 0.2,
        on_bad_image: policy,
        ..DataSection::default()
    }
}

fn file_names(paths: impl Iterator<Item = PathBuf>) -> BTreeSet<String> {
    paths
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn the_scan_keeps_every_decodable_file_and_names_each_other_one() {
    let tmp = tempfile::tempdir().unwrap();
    wild_root(tmp.path());
    let ds = Dataset::load(&cfg(tmp.path(), BadImage::Skip), 7).unwrap();
    assert_eq!(ds.class_names, ["blue", "green", "red"]);
    let kept = ds.train.iter().chain(&ds.val).filter(|it| it.label == 2);
    let kept = file_names(kept.map(|it| match &it.image {
        ImageRef::File(p) => p.clone(),
        ImageRef::Memory(i) => panic!("in-memory image {i}"),
    }));
    let mut want: BTreeSet<String> = TRAINED
        .iter()
        .chain(&TRUNCATED)
        .map(|s| s.to_string())
        .collect();
    want.insert(raw_name().to_string_lossy().into_owned());
    assert_eq!(kept, want);
    // Each skipped file is named, with its reason; the looping class folder too.
    let skipped = &ds.skipped;
    assert_eq!(skipped.len(), SKIPPED.len() + 1, "{skipped:#?}");
    for (name, word) in SKIPPED {
        let (_, why) = skipped
            .iter()
            .find(|(p, _)| p.file_name() == Some(OsStr::new(name)))
            .unwrap_or_else(|| panic!("{name} not skipped: {skipped:#?}"));
        assert!(why.contains(word), "{name}: {why}");
    }
    let again = skipped.iter().find(|(p, _)| p.ends_with("again"));
    assert!(
        again.is_some_and(|(_, why)| why.contains("symbolic link loop")),
        "{skipped:#?}"
    );
    // The warning a run prints counts them and names the first few.
    let warning = rekindle_train::data::dataset::skip_warning("skipped", skipped).unwrap();
    assert!(
        warning.contains("skipped 7 image file(s)") && warning.contains("and 4 more"),
        "{warning}"
    );

    // With `on_bad_image = "fail"` the first bad file stops the load, named.
    let err = Dataset::load(&cfg(tmp.path(), BadImage::Fail), 7)
        .unwrap_err()
        .to_string();
    assert!(err.contains("on_bad_image"), "{err}");
    assert!(SKIPPED.iter().any(|(name, _)| err.contains(name)), "{err}");
}

#[test]
fn training_and_inference_decode_every_wild_file_alike() {
    let tmp = tempfile::tempdir().unwrap();
    wild_files(tmp.path());
    let mut names: Vec<PathBuf> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        TRAINED.len() + SKIPPED.len() + TRUNCATED.len() + 1
    );
    for path in names {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let train = decode_file(&path);
        let bytes = std::fs::read(&path);
        let infer = bytes.map_err(|e| e.to_string()).and_then(|b| {
            rekindle_infer::decode::decode(&b, &name, &Limits::TRAINING).map_err(|e| e.to_string())
        });
        match (&train, &infer) {
            (Ok(t), Ok(i)) => {
                assert!(
                    *t == *i,
                    "{name}: training and inference see different pixels"
                );
                assert!(
                    TRAINED.contains(&name.as_str()) || name.starts_with("caf"),
                    "{name}"
                );
            }
            (Err(t), Err(i)) => {
                assert!(!TRAINED.contains(&name.as_str()), "{name}: {t}");
                assert!(
                    i.contains(&name) || i.contains("No such file") || i.contains("symbolic"),
                    "{i}"
                );
                // Every file the scan keeps but cannot decode is a truncated one.
                if check_file(&path).is_ok() {
                    assert!(TRUNCATED.contains(&name.as_str()), "{name}: {t}");
                    assert!(t.contains("truncated"), "{name}: {t}");
                }
            }
            _ => panic!("{name}: training {train:?}, inference {infer:?}"),
        }
    }
}

/// The largest per-channel difference of two images of the same size.
fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn want(name: &str) -> RgbImage {
    let stem = name.rsplit_once('.').unwrap().0;
    image::open(fixtures().join(format!("{stem}.want.png")))
        .unwrap()
        .to_rgb8()
}

fn decoded(name: &str) -> RgbImage {
    decode_file(&fixtures().join(name)).unwrap().to_rgb8()
}

#[test]
fn exif_orientation_is_applied_as_pil_exif_transpose_does() {
    // Each orientation matches PIL's turned picture within JPEG decoders' rounding (0 levels
    // measured, Pillow 13 against image 0.25.10), and no other orientation's picture does: the
    // 8x8 cells differ by 100 levels and more.
    let wants: Vec<RgbImage> = (1..=8).map(|n| want(&format!("exif-{n}.jpg"))).collect();
    for n in 1..=8usize {
        let got = decoded(&format!("exif-{n}.jpg"));
        let turned = n >= 5;
        assert_eq!(
            got.dimensions(),
            if turned { (16, 24) } else { (24, 16) },
            "{n}"
        );
        for (m, w) in wants.iter().enumerate() {
            if w.dimensions() != got.dimensions() {
                continue;
            }
            let d = max_diff(&got, w);
            if m + 1 == n {
                eprintln!("exif-{n}.jpg: at most {d} levels from PIL's exif_transpose");
                assert!(d <= 4, "orientation {n}: {d} levels from PIL's");
            } else {
                assert!(d > 60, "orientation {n} looks like {}: {d}", m + 1);
            }
        }
    }
    // A PNG's eXIf chunk too, exactly (lossless).
    assert!(decoded("png-exif-6.png") == want("png-exif-6.png"));
}

#[test]
fn cmyk_ycck_progressive_and_palette_files_decode_as_pil_converts_them() {
    for (name, tolerance) in [
        ("cmyk.jpg", 4),
        ("ycck.jpg", 4),
        ("progressive.jpg", 8),
        ("palette.png", 0),
        ("palette-trns.png", 0),
    ] {
        let d = max_diff(&decoded(name), &want(name));
        eprintln!("{name}: at most {d} levels from PIL's convert(\"RGB\")");
        assert!(
            d <= tolerance,
            "{name}: {d} levels from PIL's convert(\"RGB\")"
        );
    }
}

#[test]
fn a_huge_header_is_refused_before_any_pixel_buffer() {
    for (name, size) in [("huge.png", "100000x100000"), ("huge.jpg", "60000x50000")] {
        let path = fixtures().join(name);
        LARGEST.with(|l| l.set(0));
        let err = decode_file(&path).unwrap_err();
        let largest = LARGEST.with(Cell::get);
        assert!(
            err.contains(size) && err.contains("megapixels"),
            "{name}: {err}"
        );
        assert!(largest < 1 << 20, "{name}: a {largest}-byte allocation");
        let err = check_file(&path).unwrap_err();
        assert!(err.contains(size), "{name}: {err}");
        let bytes = std::fs::read(&path).unwrap();
        let err = rekindle_infer::decode::decode(&bytes, name, &Default::default()).unwrap_err();
        assert!(
            matches!(err, rekindle_infer::InferError::TooLarge { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(size), "{err}");
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_run_and_eval_on_a_wild_folder_finish_and_count_what_they_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    wild_root(&data);
    let config = tmp.path().join("run.toml");
    let run = tmp.path().join("run");
    std::fs::write(
        &config,
        format!(
            "[model]\nsource = \"random\"\narch = \"resnet18\"\n\
             [data]\nkind = \"folder\"\nroot = \"{}\"\nval_split = 0.2\nresize = 16\ncrop = 16\n\
             [train]\nepochs = 2\nbatch_size = 4\nlr = 0.01\nseed = 3\n\
             [run]\ndir = \"{}\"\n",
            data.display(),
            run.display()
        ),
    )
    .unwrap();
    // This seed puts a truncated file in the validation split, so that the run's final report
    // has to leave it out too.
    let mut c = cfg(&data, BadImage::Skip);
    c.val_split = 0.2;
    let split = Dataset::load(&c, 3).unwrap();
    let in_val = |name: &str| {
        split
            .val
            .iter()
            .any(|it| it.image.to_string().ends_with(name))
    };
    assert!(TRUNCATED.iter().any(|n| in_val(n)), "{:?}", split.val);
    let out = bin()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("skipped 7"), "{err}");
    // The truncated files fail when their batch is built: each warned about once, whatever
    // the number of epochs, and counted again where the run ends.
    let summary = format!("left out while loading {} image file(s)", TRUNCATED.len());
    assert!(err.contains(&summary), "{err}");
    for name in TRUNCATED {
        assert_eq!(
            err.matches(&format!("{name}: unreadable image")).count(),
            1,
            "{err}"
        );
    }

    // eval decodes every file first, leaves out the same ones and the truncated ones.
    let model = tmp.path().join("m.bpk");
    random_model(&model);
    let out = bin()
        .args(["eval", "--json", "--model"])
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(tmp.path().join("report"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("left out 9 image file(s)"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["images"], TRAINED.len() + 1 + 8);

    // With on_bad_image = "fail" the run stops before training, naming the file.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("val_split", "on_bad_image = \"fail\"\nval_split");
    std::fs::write(&config, text).unwrap();
    std::fs::remove_dir_all(&run).unwrap();
    let out = bin()
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success() && !err.contains("panicked"), "{err}");
    assert!(SKIPPED.iter().any(|(name, _)| err.contains(name)), "{err}");
}
