//! The pass manager, after rustc's MIR passes: every pass has a kebab-case name, can be turned
//! off by name (unless it is required), is timed, and the graph can be dumped before or after any
//! pass. With `verify_each` the verifier runs after every pass and names the pass that broke
//! the graph.

use crate::PassError;
use kiln_ir::Graph;
use std::time::{Duration, Instant};

/// What a pass is: a free function over the graph returning how many changes it made.
#[derive(Clone, Copy, Debug)]
pub struct Pass {
    pub name: &'static str,
    pub description: &'static str,
    /// Required passes cannot be disabled (the backends rely on their result).
    pub required: bool,
    pub run: fn(&mut Graph) -> Result<usize, PassError>,
}

/// When to capture a dump around a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpPoint {
    Before,
    After,
}

/// How to run a pipeline.
#[derive(Clone, Debug, Default)]
pub struct PipelineOptions {
    /// Passes to skip, by name.
    pub disabled: Vec<String>,
    /// Run the verifier after every pass (tests do).
    pub verify_each: bool,
    /// Capture the graph's text dump before or after the named pass.
    pub dump: Option<(String, DumpPoint)>,
}

/// What one pass did.
#[derive(Clone, Debug)]
pub struct PassReport {
    pub name: &'static str,
    pub changes: usize,
    pub time: Duration,
    pub skipped: bool,
}

/// What a pipeline run did, and the requested dump.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub passes: Vec<PassReport>,
    pub dump: Option<String>,
}

/// An ordered list of passes.
#[derive(Clone, Debug)]
pub struct Pipeline {
    passes: Vec<Pass>,
}

impl Pipeline {
    pub fn new(passes: Vec<Pass>) -> Pipeline {
        Pipeline { passes }
    }

    pub fn passes(&self) -> &[Pass] {
        &self.passes
    }

    /// Checks that every disabled or dumped name is a pass of this pipeline and that no required
    /// pass is disabled.
    fn check(&self, options: &PipelineOptions) -> Result<(), PassError> {
        let names: Vec<&str> = self.passes.iter().map(|p| p.name).collect();
        let unknown = |name: &str| PassError::UnknownPass {
            name: name.to_string(),
            known: names.iter().map(|s| s.to_string()).collect(),
        };
        for name in options.disabled.iter().chain(options.dump.as_ref().map(|(n, _)| n)) {
            if !names.contains(&name.as_str()) {
                return Err(unknown(name));
            }
        }
        if let Some(p) = self.passes.iter().find(|p| p.required && options.disabled.iter().any(|d| d == p.name)) {
            return Err(PassError::Required(p.name));
        }
        Ok(())
    }

    /// Runs the pipeline over `graph`.
    pub fn run(&self, graph: &mut Graph, options: &PipelineOptions) -> Result<RunReport, PassError> {
        self.check(options)?;
        let mut report = RunReport::default();
        for pass in &self.passes {
            let wants_dump = |point| options.dump.as_ref().is_some_and(|(n, p)| n == pass.name && *p == point);
            if wants_dump(DumpPoint::Before) && report.dump.is_none() {
                report.dump = Some(graph.to_string());
            }
            if options.disabled.iter().any(|d| d == pass.name) {
                report.passes.push(PassReport { name: pass.name, changes: 0, time: Duration::ZERO, skipped: true });
                continue;
            }
            let start = Instant::now();
            let changes = (pass.run)(graph)?;
            let time = start.elapsed();
            if options.verify_each {
                kiln_ir::verify(graph).map_err(|errors| PassError::Verify { pass: pass.name, errors })?;
            }
            report.passes.push(PassReport { name: pass.name, changes, time, skipped: false });
            if wants_dump(DumpPoint::After) {
                report.dump = Some(graph.to_string());
            }
        }
        Ok(report)
    }
}
