import MMLiteCore
import PostgresClient

/// What `mmlite apply` needs for conflict handling (docs/conflicts.md): the
/// opted-in tables as the catalog describes them, and what each node has
/// installed already.
struct ConflictSetup {
    let config: MeshConfig
    /// The mesh's tables (wildcards resolved).
    let tables: [QualifiedName]
    var described: [ConflictSQL.Table] = []
    var observed: [String: [String: String]] = [:]
    var problems: [String] = []

    init(config: MeshConfig, tables: [QualifiedName], connections: Connections) {
        self.config = config
        self.tables = tables
        let optedIn = tables.filter { config.tableSettings[$0]?.conflicts != nil }
        for name in optedIn {
            let policy = config.tableSettings[name]?.conflicts ?? .lastUpdateWins
            var found = false
            for node in config.nodes {
                guard let connection = connections[node.name] else { continue }
                do {
                    let columns = try Self.columns(of: name, connection)
                    guard !columns.isEmpty else { continue }
                    let table = ConflictSQL.Table(name: name, columns: columns, policy: policy, nativeApply: config.mesh.conflictApply == .auto,
                                                  deltaColumns: config.tableSettings[name]?.deltaColumns ?? [])
                    try ConflictSQL.validate(table)
                    described.append(table)
                    found = true
                } catch let error as ConflictSQL.GenerationError {
                    problems.append(error.message)
                    found = true
                } catch {
                    problems.append("\(node.name): cannot read \(name.sql): \(error)")
                    found = true
                }
                break
            }
            if !found { problems.append("\(name.sql) opts in to conflict handling but exists on no reachable node") }
        }
        for node in config.nodes {
            guard let connection = connections[node.name] else { continue }
            do {
                if let registry = try Self.registry(connection) { observed[node.name] = registry }
            } catch {
                problems.append("\(node.name): cannot read mmlite.conflict_tables: \(error)")
            }
        }
    }

    /// The tables the publication should hold.
    var publishedTables: [QualifiedName] {
        ConflictSQL.publishedTables(tables, settings: config.tableSettings)
    }

    func steps(nodes: [String]) throws -> [Step] {
        try ConflictPlanner(tables: described).steps(nodes: nodes, observed: observed)
    }

    /// Columns with primary-key positions; types printed as the apply worker
    /// (search_path = '') reads them.
    static func columns(of table: QualifiedName, _ connection: PGConnection) throws -> [ConflictSQL.Column] {
        try Catalog.tableColumns(connection, [table])[table] ?? []
    }

    /// The same, inside a transaction the caller opened with `SET LOCAL search_path TO ''`.
    static func columnsInTransaction(of table: QualifiedName, _ connection: PGConnection) throws -> [ConflictSQL.Column] {
        try Catalog.tableColumnsInTransaction(connection, [table])[table] ?? []
    }

    /// `mmlite.conflict_tables` on a node, nil when it does not exist.
    static func registry(_ connection: PGConnection) throws -> [String: String]? {
        try Catalog.conflictRegistry(connection)
    }
}
