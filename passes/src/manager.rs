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
    /// Capture the graph's text dump before or after the named pass. A pass that runs more than
    /// once (`dead-code`) is dumped before its first run and after its last; a disabled pass
    /// still has a before and an after (the same graph).
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
    /// The text dump [`PipelineOptions::dump`] asked for.
    pub dump: Option<String>,
    /// The graph that dump shows (to render it another way, such as Graphviz).
    pub dump_graph: Option<Graph>,
}

impl RunReport {
    fn capture(&mut self, graph: &Graph) {
        self.dump = Some(graph.to_string());
        self.dump_graph = Some(graph.clone());
    }
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
        let mut names: Vec<&str> = Vec::new();
        for p in &self.passes {
            if !names.contains(&p.name) {
                names.push(p.name);
            }
        }
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
                report.capture(graph);
            }
            if options.disabled.iter().any(|d| d == pass.name) {
                report.passes.push(PassReport { name: pass.name, changes: 0, time: Duration::ZERO, skipped: true });
            } else {
                let start = Instant::now();
                let changes = (pass.run)(graph)?;
                let time = start.elapsed();
                if options.verify_each {
                    kiln_ir::verify(graph).map_err(|errors| PassError::Verify { pass: pass.name, errors })?;
                }
                report.passes.push(PassReport { name: pass.name, changes, time, skipped: false });
            }
            if wants_dump(DumpPoint::After) {
                report.capture(graph);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline() -> Pipeline {
        let count = Pass { name: "count", description: "", required: false, run: |g| Ok(g.node_count()) };
        let rename = Pass {
            name: "rename",
            description: "",
            required: true,
            run: |g| {
                g.name.push('\'');
                Ok(1)
            },
        };
        Pipeline::new(vec![count, rename, count])
    }

    fn options(disabled: &[&str], dump: Option<(&str, DumpPoint)>) -> PipelineOptions {
        PipelineOptions {
            disabled: disabled.iter().map(|s| s.to_string()).collect(),
            verify_each: true,
            dump: dump.map(|(n, p)| (n.to_string(), p)),
        }
    }

    #[test]
    fn dumps_around_passes_even_disabled_ones() {
        let run = |disabled: &[&str], dump| {
            let mut g = Graph::new("g");
            pipeline().run(&mut g, &options(disabled, Some(dump))).unwrap()
        };
        assert_eq!(run(&[], ("rename", DumpPoint::Before)).dump.unwrap(), "graph g {\n  return \n}\n");
        let after = run(&[], ("rename", DumpPoint::After));
        assert_eq!(after.dump.unwrap(), "graph g' {\n  return \n}\n");
        assert_eq!(after.dump_graph.unwrap().name, "g'");
        // `count` runs twice and is disabled: the dump still comes, after its last run.
        let report = run(&["count"], ("count", DumpPoint::After));
        assert_eq!(report.dump_graph.unwrap().name, "g'");
        assert_eq!(report.passes.iter().filter(|p| p.skipped).count(), 2);
    }

    #[test]
    fn rejects_unknown_and_required_names() {
        let mut g = Graph::new("g");
        let unknown = pipeline().run(&mut g, &options(&["cout"], None)).unwrap_err().to_string();
        assert_eq!(unknown, "no pass is named `cout` (the passes are: count, rename)");
        let required = pipeline().run(&mut g, &options(&["rename"], None)).unwrap_err().to_string();
        assert_eq!(required, "pass `rename` is required and cannot be disabled");
        let dump = pipeline().run(&mut g, &options(&[], Some(("nope", DumpPoint::After)))).unwrap_err();
        assert!(matches!(dump, PassError::UnknownPass { .. }));
    }
}
