import Foundation
import MMLiteCore

/// Connects, gathers facts, runs probes and evaluates the checks.
struct Preflight {
    let config: MeshConfig
    let connections: Connections
    let inspector: Inspector
    var facts: [NodeFacts]
    var tables: [QualifiedName]
    var unmatched: [TablePattern]

    init(config: MeshConfig, console: Console) {
        self.config = config
        connections = Connections(config: config, console: console)
        inspector = Inspector(config: config, connections: connections, console: console)
        (facts, tables, unmatched) = inspector.gather()
    }

    var states: [String: NodeState] {
        Dictionary(uniqueKeysWithValues: facts.compactMap { facts in facts.state.map { (facts.name, $0) } })
    }

    var unreachable: [NodeFacts] { facts.filter { !$0.reachable } }

    /// The mesh as observed: versions of the reachable nodes, their states.
    var view: MeshView { MeshView(config: config, facts: facts) }

    /// Nodes whose slots would use the mmlite plugin for at least one peer.
    func publishersNeedingPlugin() -> Set<String> {
        view.publishersNeedingPlugin
    }

    mutating func probe(_ request: ProbeRequest) {
        inspector.probe(&facts, request)
    }

    func evaluate(for purpose: Checks.Purpose) -> [CheckResult] {
        Checks(config: config, facts: facts, tables: tables, unmatchedPatterns: unmatched, purpose: purpose).evaluate()
    }
}
