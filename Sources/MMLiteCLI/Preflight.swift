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

    /// Nodes whose slots would use the mmlite plugin for at least one peer.
    func publishersNeedingPlugin() -> Set<String> {
        var result = Set<String>()
        for link in Planner.links(of: config.nodes.map(\.name)) {
            guard let p = facts.first(where: { $0.name == link.publisher }), p.reachable else { continue }
            let s = facts.first { $0.name == link.subscriber }
            let subscriberMajor = (s?.reachable ?? false) ? s!.major : 0
            if (try? LinkFilter.choose(config.mesh.filter, publisherMajor: p.major, subscriberMajor: subscriberMajor)) != .originNone {
                result.insert(link.publisher)
            }
        }
        return result
    }

    mutating func probe(_ request: ProbeRequest) {
        inspector.probe(&facts, request)
    }

    func evaluate() -> [CheckResult] {
        Checks(config: config, facts: facts, tables: tables, unmatchedPatterns: unmatched).evaluate()
    }
}
