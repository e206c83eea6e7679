import MMLiteCore
import PostgresClient

/// Schema drift in `status` (docs/cli.md): the mesh tables' columns and
/// primary keys on every reachable node, and on members the opted-in tables'
/// installed conflict handling. Read here; judged by `MeshDrift`.
extension Status {
    /// Drift among the reachable members (a node that has not joined may
    /// lack the tables: join creates them); a node whose catalog cannot be
    /// read gets an `unread` problem per table (health unknown).
    func drift(_ view: MeshView, nodes: [NodeStatus], connections: Connections) -> [DriftProblem] {
        let config = view.config
        let members = Set(view.members)
        var existing: [(String, Set<QualifiedName>)] = []
        for node in nodes where node.reachable && members.contains(node.name) {
            guard let connection = connections[node.name] else { continue }
            do { existing.append((node.name, try Catalog.userTables(connection))) }
            catch { context.console.debug("drift: cannot list the tables of \(node.name): \(error)") }
        }
        let tables = resolveTables(config.mesh.tables, existing: existing.map(\.1)).tables
        let toRead = MeshDrift.tablesToRead(config: config, tables: tables)
        var facts: [(name: String, facts: DriftFacts)] = []
        var unread: [DriftProblem] = []
        for (name, _) in existing {
            guard let connection = connections[name] else { continue }
            do {
                facts.append((name, DriftFacts(columns: try Catalog.tableColumns(connection, toRead),
                                               registry: try Catalog.conflictRegistry(connection) ?? [:])))
            } catch {
                // Unchecked is not the same as equal: every table's drift on this node is unknown.
                let read = context.console.readError(error)
                let message = context.console.message(of: error)
                let fix = read?.missingPrivilege == true
                    ? "give the role in \(name)'s dsn the rights in docs/security.md (\"A role for status and monitoring\")"
                    : "run `mmlite status` again; if it persists, look in \(name)'s server log"
                unread += tables.map { DriftProblem(table: $0, node: name, kind: "unread", health: .unknown,
                                                    message: "\($0.sql) could not be compared on \(name): \(message)", fix: fix) }
            }
        }
        return MeshDrift.problems(config: config, tables: tables, nodes: facts, members: members) + unread
    }

    static func driftJSON(_ problems: [DriftProblem]) -> JSON {
        .array(problems.map { problem in
            .object([
                ("table", .string(problem.table.sql)),
                ("node", .optional(problem.node)),
                ("kind", .string(problem.kind)),
                ("state", .string(problem.health.rawValue)),
                ("message", .string(problem.message)),
                ("fix", .string(problem.fix)),
            ])
        })
    }

    /// The problem lines of the table output.
    static func driftLines(_ problems: [DriftProblem]) -> [String] {
        problems.map { "\($0.message) (\($0.health.rawValue)); fix: \($0.fix)" }
    }
}
