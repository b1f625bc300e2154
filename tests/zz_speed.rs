use kiln_runtime::checkpoint::Checkpoint;
use kiln_runtime::{resolve_spec, Backend, GradientOptions, GradientProgram};
#[test]
#[ignore]
fn speed() {
    let dir = std::path::PathBuf::from(std::env::var("KDIR").unwrap());
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let spec = resolve_spec(checkpoint.config(), None).unwrap();
    let lowered = kiln_frontend::compile(&spec, checkpoint.config(), &Default::default()).unwrap();
    let weights: Vec<String> = lowered
        .inputs()
        .iter()
        .filter_map(|&n| lowered.param(n))
        .filter(|p| p.role == kiln_ir::ParamRole::Weight)
        .map(|p| p.name.clone())
        .collect();
    for backend in [Backend::Interpreter, Backend::Jit] {
        let t0 = std::time::Instant::now();
        let p = GradientProgram::new(
            &lowered,
            Checkpoint::open(&dir).unwrap(),
            &weights,
            &GradientOptions { backend, ..Default::default() },
        )
        .unwrap();
        eprintln!("compile {:?}", t0.elapsed());
        let params = p.checkpoint_values().unwrap();
        let tokens: Vec<i64> = (0..128).map(|i| (i * 7 % 60) as i64).collect();
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let (loss, _) = p.loss_and_grad(&params, &tokens).unwrap();
            let dt = t0.elapsed();
            let t1 = std::time::Instant::now();
            p.loss(&params, &tokens).unwrap();
            eprintln!("{backend:?} loss {loss} step {:?} fwd {:?}", dt, t1.elapsed());
        }
    }
}
