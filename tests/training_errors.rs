//! Bad input to `kiln grad` and `kiln train` gets a one-line error naming what is wrong, never a
//! panic, and nothing the user wrote is overwritten unasked.

use kiln_suite::{cli, cli_err, fixture, scratch};

#[test]
fn grad_misuse() {
    let model = fixture("lora-rwkv4");
    let m = model.to_str().unwrap();
    let adapter = model.join("adapter");
    let a = adapter.to_str().unwrap();
    let dir = scratch("grad-misuse");
    let out = dir.join("grads.safetensors");
    let o = out.to_str().unwrap();

    let e = cli_err(&["grad", m, "--adapter", a, "--tokens", "5", "--out", o]);
    assert!(e.contains("at least 2 tokens"), "{e}");
    let e = cli_err(&["grad", m, "--adapter", a, "--tokens", "5,300", "--out", o]);
    assert!(e.contains("token id 300 at position 1") && e.contains("300 entries"), "{e}");
    let e = cli_err(&["grad", m, "--adapter", dir.join("none").to_str().unwrap(), "--tokens", "1,2", "--out", o]);
    assert!(e.contains("none"), "{e}");
    let e = cli_err(&["grad", m, "--adapter", a, "--tokens", "1,2", "--chunk", "0", "--out", o]);
    assert!(e.contains("chunk"), "{e}");

    std::fs::write(&out, b"precious").unwrap();
    let e = cli_err(&["grad", m, "--adapter", a, "--tokens", "1,2,3", "--out", o]);
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    assert!(cli(&["grad", m, "--adapter", a, "--tokens", "1,2,3", "--out", o, "--force"]).unwrap().contains("loss "));
}

#[test]
fn train_misuse() {
    let model = fixture("lora-rwkv4");
    let m = model.to_str().unwrap();
    let dir = scratch("train-misuse");
    let data = dir.join("text.txt");
    std::fs::write(&data, "to be or not to be, that is the question ".repeat(40)).unwrap();
    let d = data.to_str().unwrap();
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let base = ["train", m, "--data", d, "--out", o, "--steps", "2", "--warmup", "0", "--seq-len", "16", "--quiet"];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };

    let e = cli_err(&base);
    assert!(e.contains("--targets") && e.contains("--full"), "{e}");
    let e = cli_err(&with(&["--targets", "no_such_module"]));
    assert!(e.contains("no_such_module"), "{e}");
    let missing = dir.join("missing.txt");
    let e = cli_err(&["train", m, "--data", missing.to_str().unwrap(), "--out", o, "--full", "--quiet"]);
    assert!(e.contains("missing.txt"), "{e}");

    // A finished run is not replaced unasked.
    cli(&with(&["--targets", "key"])).unwrap();
    let e = cli_err(&with(&["--targets", "key"]));
    assert!(e.contains("--force") || e.contains("--resume"), "{e}");
    cli(&with(&["--targets", "key", "--force"])).unwrap();
}
