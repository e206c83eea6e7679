import Foundation
import MMLiteCore
import PostgresClient

/// apply's and doctor's check that every table about to be wired into the
/// mesh holds the same rows on every node it is wired on (Core's
/// `ContentCheck` judges): cheap first (empty or not, row estimates), then,
/// where every node holds rows, one hashing scan per node, all at once
/// (skipped with `--skip-hash-check`; the emptiness check never is).
struct ContentGate {
    let config: MeshConfig
    let console: Console
    let skipHash: Bool
    /// doctor: a one-node mesh about to grow by join warns instead of failing.
    var forDoctor = false

    func checks(_ preflight: Preflight) -> [CheckResult] {
        let view = preflight.view
        let reachable = Set(preflight.facts.filter(\.reachable).map(\.name))
        let members = view.members.filter { reachable.contains($0) }
        let tables = ContentCheck.tablesToWire(preflight.tables, states: preflight.states, members: members, running: view.isRunning) {
            [$0, ConflictSQL.changeTable($0)]
        }.filter { table in
            // A table missing somewhere fails the table check already.
            preflight.facts.filter { members.contains($0.name) }.allSatisfy { $0.tables[table] != nil }
        }
        guard members.count >= 2, !tables.isEmpty else { return [] }
        let compare = TableCompare(config: config, console: console, only: members)
        defer { compare.close() }
        let results = tables.map { check($0, compare: compare, nodes: members, running: view.isRunning) }
        let published = config.nodes.map(\.name).filter { preflight.states[$0]?.publication != nil }
        guard forDoctor, !view.isRunning, published.count == 1 else { return results }
        return results.map { ContentCheck.beforeJoin($0, source: published[0]) }
    }

    func check(_ table: QualifiedName, compare: TableCompare, nodes: [String], running: Bool) -> CheckResult {
        let cheap = compare.everywhere("""
            SELECT NOT EXISTS (SELECT FROM \(table.sql)) AS empty,
                   (SELECT greatest(c.reltuples::bigint, 0) FROM pg_catalog.pg_class c WHERE c.oid = pg_catalog.to_regclass($1)) AS estimate
            """, [table.sql])
        var facts: [String: ContentCheck.Facts] = [:]
        for (node, answer) in cheap {
            guard let row = answer.first else { continue }
            facts[node] = ContentCheck.Facts(empty: row.bool("empty") ?? false, rowEstimate: row.int64("estimate") ?? 0)
        }
        if ContentCheck.needsHashes(facts) && !skipHash {
            if case .success(let described) = compare.describeTable(table) {
                for (node, summary) in compare.summaries(described, buckets: 1) { facts[node]?.summary = summary }
            }
        }
        return ContentCheck.judge(table, facts: facts, nodes: nodes, running: running, hashSkipped: skipHash)
    }
}
