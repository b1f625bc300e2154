//! `fuse-matmul`: a matrix product whose only user is an elementwise kernel over its result
//! (bias, activation, residual add, gating) becomes one `matmul.fused` node: the kernel is the
//! product's epilogue and runs on each row of the product as it is produced, so the product
//! never makes another trip through memory. Runs after `fuse-elementwise`; a lone elementwise
//! op after a product is wrapped into a one-op epilogue.
//!
//! Guarantee: the epilogue reads the product exactly where the kernel read it (at vector level,
//! unbroadcast), so results are unchanged.

use crate::PassError;
use kiln_ir::{Graph, Instr, Kernel, KernelOutput, Level, NodeId, Op, Value};

/// Fuses products with their epilogues in `graph` and its scan bodies; returns how many.
pub fn fuse_matmul(graph: &mut Graph) -> Result<usize, PassError> {
    let mut made = 0;
    let ids: Vec<NodeId> = graph.node_ids().collect();
    for n in &ids {
        if let Op::Scan(scan) = &mut graph.node_mut(*n).op {
            made += fuse_matmul(&mut scan.body)?;
        }
    }
    let outputs: Vec<Value> = graph.outputs().iter().map(|o| o.value).collect();
    for m in ids {
        if !graph.contains(m) {
            continue;
        }
        let Op::MatMul { transpose_rhs } = graph.node(m).op else { continue };
        let users = graph.users(m);
        let ([u], false) = (users.as_slice(), outputs.contains(&Value::from(m))) else { continue };
        let Some((epilogue, rest)) = epilogue(graph, m, *u) else { continue };
        let mut operands: Vec<Value> = graph.operands(m).to_vec();
        operands.extend(rest);
        let origin = graph.node(*u).origin.clone();
        let op = Op::FusedMatMul { transpose_rhs, epilogue: Box::new(epilogue) };
        let Ok(fused) = graph.add(op, &operands, origin) else { continue };
        for k in 0..graph.node(*u).results.len() {
            graph.replace_all_uses(Value::new(*u, k as u16), Value::new(fused, k as u16));
        }
        graph.remove_node(*u);
        graph.remove_node(m);
        made += 1;
    }
    Ok(made)
}

/// The epilogue kernel reading product `m` as operand 0, and the user's other operands.
fn epilogue(graph: &Graph, m: NodeId, u: NodeId) -> Option<(Kernel, Vec<Value>)> {
    let product = graph.value_type(Value::from(m)).shape.clone();
    let ops = graph.operands(u);
    match &graph.node(u).op {
        Op::Fused(k) if k.shape == product => {
            // Every read of the product must be a plain vector read of its own shape.
            let reads_product: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].node == m).collect();
            let plain = reads_product.iter().all(|&i| k.reads[i] == product)
                && k.body
                    .iter()
                    .all(|ins| !matches!(ins, Instr::Input(i, Level::Row) if reads_product.contains(&(*i as usize))));
            if !plain {
                return None;
            }
            let mut map = vec![0u16; ops.len()];
            let mut rest = Vec::new();
            let mut reads = vec![product.clone()];
            for (i, v) in ops.iter().enumerate() {
                if v.node != m {
                    rest.push(*v);
                    reads.push(k.reads[i].clone());
                    map[i] = u16::try_from(rest.len()).ok()?;
                }
            }
            let body = k
                .body
                .iter()
                .map(|ins| match *ins {
                    Instr::Input(i, level) => Instr::Input(map[i as usize], level),
                    other => other,
                })
                .collect();
            Some((Kernel { shape: product, reads, body, outputs: k.outputs.clone() }, rest))
        }
        op if op.is_elementwise() && ops.iter().all(|v| graph.value_type(*v).shape == product) => {
            let mut rest = Vec::new();
            let mut reads = vec![product.clone()];
            let mut body = Vec::new();
            let mut args = Vec::new();
            for v in &ops {
                let k = if v.node == m {
                    0
                } else {
                    rest.push(*v);
                    reads.push(product.clone());
                    u16::try_from(rest.len()).ok()?
                };
                body.push(Instr::Input(k, Level::Vector));
                args.push(u16::try_from(body.len() - 1).ok()?);
            }
            let ins = match (op, args.as_slice()) {
                (Op::Unary(x), [a]) => Instr::Unary(*x, *a),
                (Op::Binary(x), [a, b]) => Instr::Binary(*x, *a, *b),
                (Op::Compare(x), [a, b]) => Instr::Compare(*x, *a, *b),
                (Op::Select, [c, a, b]) => Instr::Select(*c, *a, *b),
                _ => return None,
            };
            body.push(ins);
            let out = KernelOutput { instr: u16::try_from(body.len() - 1).ok()?, level: Level::Vector };
            Some((Kernel { shape: product, reads, body, outputs: vec![out] }, rest))
        }
        _ => None,
    }
}
