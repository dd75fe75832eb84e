//! How torchvision `state_dict` keys map onto this crate's module paths.
//!
//! | torchvision / timm key              | rekindle path                        | how            |
//! |-------------------------------------|--------------------------------------|----------------|
//! | `conv1.weight`                      | `conv1.weight`                       | same name      |
//! | `bn1.weight` / `bn1.bias`           | `bn1.gamma` / `bn1.beta`             | adapter        |
//! | `bn1.running_mean` / `running_var`  | same                                 | same name      |
//! | `layer2.0.conv2.weight`             | `layer2.0.conv2.weight`              | same name [^1] |
//! | `layer2.0.downsample.0.weight`      | `layer2.0.downsample.conv.weight`    | [`TORCHVISION_TO_REKINDLE`] |
//! | `layer2.0.downsample.1.*`           | `layer2.0.downsample.bn.*`           | [`TORCHVISION_TO_REKINDLE`] |
//! | `fc.weight` `[out, in]`             | `head.fc.weight` `[in, out]`         | remap + adapter transposes |
//! | `*.num_batches_tracked`             | (none)                               | unused: Burn's BatchNorm has no counter |
//!
//! [^1]: Blocks are an enum (`Block::Basic` / `Block::Bottleneck`); burn-store's PyTorch and
//! safetensors stores leave the variant name out of the path.
//!
//! "adapter" is burn-store's `PyTorchToBurnAdapter` (and `BurnToPyTorchAdapter` on export),
//! which renames BatchNorm's `weight`/`bias` and transposes Linear weights by module type.

/// Regex rewrites from torchvision / timm keys to rekindle paths, applied in order.
pub const TORCHVISION_TO_REKINDLE: &[(&str, &str)] = &[
    (r"^fc\.", "head.fc."),
    (r"\.downsample\.0\.", ".downsample.conv."),
    (r"\.downsample\.1\.", ".downsample.bn."),
];

/// Regex rewrites from rekindle paths back to torchvision keys (the inverse of
/// [`TORCHVISION_TO_REKINDLE`]), for export.
pub const REKINDLE_TO_TORCHVISION: &[(&str, &str)] = &[
    (r"^head\.fc\.", "fc."),
    (r"\.downsample\.conv\.", ".downsample.0."),
    (r"\.downsample\.bn\.", ".downsample.1."),
];

/// Applies a rewrite table to one key (what burn-store's `KeyRemapper` does per tensor).
pub fn remap_key(table: &[(&str, &str)], key: &str) -> String {
    table.iter().fold(key.to_string(), |k, (from, to)| {
        // The tables above are constant and valid; a bad pattern is a bug caught by the tests.
        regex::Regex::new(from)
            .expect("valid remap regex")
            .replace_all(&k, *to)
            .into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_torchvision_keys_and_back() {
        let cases = [
            ("conv1.weight", "conv1.weight"),
            ("fc.weight", "head.fc.weight"),
            ("fc.bias", "head.fc.bias"),
            (
                "layer3.0.downsample.0.weight",
                "layer3.0.downsample.conv.weight",
            ),
            (
                "layer3.0.downsample.1.running_var",
                "layer3.0.downsample.bn.running_var",
            ),
            ("layer1.2.bn3.running_mean", "layer1.2.bn3.running_mean"),
        ];
        for (tv, rk) in cases {
            assert_eq!(remap_key(TORCHVISION_TO_REKINDLE, tv), rk);
            assert_eq!(remap_key(REKINDLE_TO_TORCHVISION, rk), tv);
        }
    }

    #[test]
    fn does_not_touch_lookalikes() {
        // `fc` only at the root; `downsample.0` only as a whole segment.
        assert_eq!(
            remap_key(TORCHVISION_TO_REKINDLE, "head.fc.weight"),
            "head.fc.weight"
        );
        assert_eq!(
            remap_key(TORCHVISION_TO_REKINDLE, "layer1.0.downsample.10.weight"),
            "layer1.0.downsample.10.weight"
        );
    }
}
