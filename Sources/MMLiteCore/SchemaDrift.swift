/// Schema drift: a mesh table whose columns or primary key differ between
/// nodes, and an opted-in table whose installed conflict handling no longer
/// matches its columns (docs/cli.md, `status`; docs/conflicts.md). Pure:
/// judged from per-node catalog facts the tool gathers; `status` reports
/// both, `doctor`'s table check renders `SchemaDrift` per node.

/// What must be the same on every node for one table: its columns (name and
/// `format_type` text, in column order) and its primary key.
public struct TableShape: Sendable, Equatable {
    public struct Column: Sendable, Equatable {
        public var name: String
        public var type: String
        public init(name: String, type: String) {
            self.name = name
            self.type = type
        }
    }
    public var columns: [Column]
    /// Primary-key columns in key order; empty: no primary key.
    public var primaryKey: [String]

    public init(columns: [Column], primaryKey: [String]) {
        self.columns = columns
        self.primaryKey = primaryKey
    }

    /// From the columns `mmlite apply` reads for conflict handling.
    public init(_ columns: [ConflictSQL.Column]) {
        self.init(columns: columns.map { Column(name: $0.name, type: $0.type) },
                  primaryKey: ConflictSQL.Table(name: QualifiedName(schema: "", name: ""), columns: columns, policy: .lastUpdateWins).keyColumns.map(\.name))
    }
}

extension TableFacts {
    /// The table's shape (primary key from the columns' key positions).
    public var shape: TableShape {
        TableShape(columns: columns.map { TableShape.Column(name: $0.name, type: $0.type) },
                   primaryKey: columns.filter { $0.keyPosition != nil }.sorted { ($0.keyPosition ?? 0) < ($1.keyPosition ?? 0) }.map(\.name))
    }
}

/// How one table differs between the nodes that were compared.
public struct SchemaDrift: Sendable, Equatable {
    /// One form of something (a column's type, a primary key) and the nodes that have it.
    public struct Variant<Value: Sendable & Equatable>: Sendable, Equatable {
        public var value: Value
        public var nodes: [String]
        public init(value: Value, nodes: [String]) {
            self.value = value
            self.nodes = nodes
        }
    }

    public enum Difference: Sendable, Equatable {
        /// The table exists on some nodes only.
        case table(presentOn: [String], missingOn: [String])
        /// A column exists on some of the nodes that have the table.
        case column(String, type: String, presentOn: [String], missingOn: [String])
        /// A column has different types; the most common type first.
        case type(column: String, [Variant<String>])
        /// Different primary keys (an empty key: none); the most common first.
        case primaryKey([Variant<[String]>])
    }

    public var table: QualifiedName
    public var differences: [Difference]

    public init(table: QualifiedName, differences: [Difference]) {
        self.table = table
        self.differences = differences
    }

    /// Compares `table` on the given nodes (nil shape: the table does not
    /// exist there); the first node holding a form breaks ties. Differences
    /// in column order: missing columns, then types, then the primary key.
    public static func compare(_ table: QualifiedName, shapes: [(node: String, shape: TableShape?)]) -> SchemaDrift {
        let present = shapes.compactMap { entry in entry.shape.map { (node: entry.node, shape: $0) } }
        var differences: [Difference] = []
        guard !present.isEmpty else { return SchemaDrift(table: table, differences: []) }
        let missing = shapes.filter { $0.shape == nil }.map(\.node)
        if !missing.isEmpty {
            differences.append(.table(presentOn: present.map(\.node), missingOn: missing))
        }
        var order: [String] = []
        for entry in present { for column in entry.shape.columns where !order.contains(column.name) { order.append(column.name) } }
        var types: [Difference] = []
        for name in order {
            let having = present.compactMap { entry in entry.shape.columns.first { $0.name == name }.map { (node: entry.node, type: $0.type) } }
            if having.count < present.count {
                let lacking = present.map(\.node).filter { node in !having.contains { $0.node == node } }
                differences.append(.column(name, type: variants(having.map { ($0.node, $0.type) })[0].value,
                                           presentOn: having.map(\.node), missingOn: lacking))
            }
            let forms = variants(having.map { ($0.node, $0.type) })
            if forms.count > 1 { types.append(.type(column: name, forms)) }
        }
        differences += types
        let keys = variants(present.map { ($0.node, $0.shape.primaryKey) })
        if keys.count > 1 { differences.append(.primaryKey(keys)) }
        return SchemaDrift(table: table, differences: differences)
    }

    /// Distinct values with their nodes: most nodes first, then first seen.
    static func variants<Value: Equatable>(_ values: [(String, Value)]) -> [Variant<Value>] {
        var result: [Variant<Value>] = []
        for (node, value) in values {
            if let index = result.firstIndex(where: { $0.value == value }) { result[index].nodes.append(node) }
            else { result.append(Variant(value: value, nodes: [node])) }
        }
        return result.enumerated().sorted { ($0.element.nodes.count, -$0.offset) > ($1.element.nodes.count, -$1.offset) }.map(\.element)
    }

    /// Each difference as `status` reports it: what differs, where, and the
    /// statements that make the nodes agree.
    public var problems: [DriftProblem] {
        let name = table.sql
        return differences.map { difference in
            switch difference {
            case .table(let present, let missing):
                return DriftProblem(table: table, node: nil, kind: "table_missing",
                                    message: "\(name) exists on \(list(present)) but not on \(list(missing))",
                                    fix: "create it on \(list(missing)) with the same definition (pg_dump --schema-only --table=\(shellQuote(name)) <\(present[0])'s database> | psql <\(missing[0])'s database>), or take it out of mesh.tables")
            case .column(let column, let type, let present, let missing):
                let add = "ALTER TABLE \(name) ADD COLUMN \(SQL.identifier(column)) \(type);"
                return DriftProblem(table: table, node: nil, kind: "column_missing",
                                    message: "\(name): column \(SQL.identifier(column)) exists on \(list(present)) but not on \(list(missing))",
                                    fix: "on \(list(missing)): \(add) (or, if it was dropped on purpose, drop it on \(list(present))); run schema changes on every node at once with mmlite ddl \(shellQuote(add))")
            case .type(let column, let forms):
                let others = forms.dropFirst()
                let alter = "ALTER TABLE \(name) ALTER COLUMN \(SQL.identifier(column)) TYPE \(forms[0].value);"
                return DriftProblem(table: table, node: nil, kind: "column_type",
                                    message: "\(name): column \(SQL.identifier(column)) is \(forms[0].value) on \(list(forms[0].nodes)) but "
                                        + others.map { "\($0.value) on \(list($0.nodes))" }.joined(separator: ", "),
                                    fix: "on \(list(others.flatMap(\.nodes))): \(alter) (or change it on \(list(forms[0].nodes)) instead); run schema changes on every node at once with mmlite ddl \(shellQuote(alter))")
            case .primaryKey(let forms):
                func key(_ columns: [String]) -> String { columns.isEmpty ? "no primary key" : "primary key (\(columns.map(SQL.identifier).joined(separator: ", ")))" }
                let others = forms.dropFirst()
                let add = forms[0].value.isEmpty ? "ALTER TABLE \(name) DROP CONSTRAINT <its primary key>;"
                    : "ALTER TABLE \(name) \(others.contains { !$0.value.isEmpty } ? "DROP CONSTRAINT <its primary key>, " : "")ADD PRIMARY KEY (\(forms[0].value.map(SQL.identifier).joined(separator: ", ")));"
                return DriftProblem(table: table, node: nil, kind: "primary_key",
                                    message: "\(name) has \(key(forms[0].value)) on \(list(forms[0].nodes)) but "
                                        + others.map { "\(key($0.value)) on \(list($0.nodes))" }.joined(separator: ", "),
                                    fix: "on \(list(others.flatMap(\.nodes))): \(add)")
            }
        }
    }

    func list(_ nodes: [String]) -> String { nodes.joined(separator: ", ") }
}

/// An opted-in table whose conflict-handling objects on one node no longer
/// match the table: judged from the registry's definition hash
/// (`mmlite.conflict_tables`) and the change and version tables' columns.
public enum ConflictDrift: Sendable, Equatable {
    /// Opted in, but `mmlite apply` has not installed it on this node.
    case notInstalled
    /// Registered, but the change or version table is gone.
    case objectsMissing
    /// Installed for other columns: `added` are in the table but not in the
    /// change table (their values are not replicated), `dropped` the
    /// reverse, `retyped` have another type in the change (or version)
    /// table, `key` is the version table's key when the primary key changed.
    case columns(added: [String], dropped: [String], retyped: [Retyped], key: [String]?)
    /// The columns match, the definition does not: installed by another mmlite
    /// generation, or with another policy or conflict_apply setting.
    case outdated

    public struct Retyped: Sendable, Equatable {
        public var column: String
        public var installed: String
        public var current: String
        /// The version table's key column (else the change table's).
        public var inKey: Bool
        public init(column: String, installed: String, current: String, inKey: Bool) {
            self.column = column
            self.installed = installed
            self.current = current
            self.inKey = inKey
        }
    }

    /// What one node holds for one opted-in table.
    public struct Facts: Sendable, Equatable {
        /// `mmlite.conflict_tables.definition`; nil: not registered.
        public var definition: String?
        /// The change and version tables' columns; nil: the table does not exist.
        public var changeTable: [TableShape.Column]?
        public var versionTable: [TableShape.Column]?
        public init(definition: String?, changeTable: [TableShape.Column]?, versionTable: [TableShape.Column]?) {
            self.definition = definition
            self.changeTable = changeTable
            self.versionTable = versionTable
        }
    }

    /// nil when what is installed matches `table` (as `mmlite apply` would install it now).
    public static func assess(_ table: ConflictSQL.Table, installed: Facts) -> ConflictDrift? {
        guard let definition = installed.definition else { return .notInstalled }
        guard let change = installed.changeTable, let version = installed.versionTable else { return .objectsMissing }
        let current = definition == ConflictSQL.definition(table)
        let writable = table.columns.filter { !$0.generated }
        // Delta columns' change-table columns are install's own, not captured user columns.
        let deltaOwn = Set(ConflictSQL.lifeChangeColumns + table.deltaColumns.map(ConflictSQL.deltaChangeColumn))
        let captured = change.filter { !ConflictContract.changeColumns.contains($0.name) && !deltaOwn.contains($0.name) }
        let added = writable.filter { column in !captured.contains { $0.name == column.name } }.map(\.name)
        let dropped = captured.filter { column in !writable.contains { $0.name == column.name } }.map(\.name)
        var retyped: [Retyped] = []
        for column in writable {
            if let old = captured.first(where: { $0.name == column.name }), old.type != column.type {
                retyped.append(Retyped(column: column.name, installed: old.type, current: column.type, inKey: false))
            }
        }
        let versionKey = version.filter { !ConflictContract.versionColumns.contains($0.name) && !ConflictSQL.lifeVersionColumns.contains($0.name) }
        let keyChanged = versionKey.map(\.name) != table.keyColumns.map(\.name)
        if !keyChanged {
            for (old, column) in zip(versionKey, table.keyColumns) where old.type != column.type {
                retyped.append(Retyped(column: column.name, installed: old.type, current: column.type, inKey: true))
            }
        }
        // Apply adds columns to the change table and leaves dropped ones
        // there (unused): dropped columns are drift only until it reinstalls.
        if !added.isEmpty || !retyped.isEmpty || keyChanged || (!current && !dropped.isEmpty) {
            return .columns(added: added, dropped: current ? [] : dropped, retyped: retyped, key: keyChanged ? versionKey.map(\.name) : nil)
        }
        return current ? nil : .outdated
    }

    public var health: Health {
        switch self {
        case .notInstalled, .outdated: return .warning
        case .objectsMissing, .columns: return .critical
        }
    }

    /// As `status` reports it on `node`.
    public func problem(_ table: ConflictSQL.Table, node: String) -> DriftProblem {
        let name = table.name.sql
        let label = "\(name) on \(node): "
        func ids(_ names: [String]) -> String { names.map(SQL.identifier).joined(separator: ", ") }
        switch self {
        case .notInstalled:
            return DriftProblem(table: table.name, node: node, kind: "conflicts_not_installed", health: health,
                                message: label + "opts in to conflict handling (\(table.policy.rawValue)) but it is not installed here",
                                fix: "mmlite apply")
        case .objectsMissing:
            return DriftProblem(table: table.name, node: node, kind: "conflicts_objects_missing", health: health,
                                message: label + "conflict handling is registered but its change or version table (\(ConflictSQL.changeTable(table.name).sql), \(ConflictSQL.versionTable(table.name).sql)) is missing",
                                fix: "DELETE FROM mmlite.conflict_tables WHERE table_name = \(SQL.literal(table.registryName)); on \(node), then mmlite apply")
        case .outdated:
            return DriftProblem(table: table.name, node: node, kind: "conflicts_outdated", health: health,
                                message: label + "conflict handling was installed by another mmlite version or with another policy or conflict_apply setting",
                                fix: "mmlite apply (reinstalls it)")
        case .columns(let added, let dropped, let retyped, let key):
            var what: [String] = []
            if !added.isEmpty { what.append("\(ids(added)) added since") }
            if !dropped.isEmpty { what.append("\(ids(dropped)) dropped since") }
            var listed: Set<String> = []
            for change in retyped where listed.insert(change.column).inserted {
                what.append("\(SQL.identifier(change.column)) is \(change.current), was \(change.installed)")
            }
            func keyText(_ names: [String]) -> String { names.isEmpty ? "none" : "(\(ids(names)))" }
            if let key { what.append("primary key is \(keyText(table.keyColumns.map(\.name))), was \(keyText(key))") }
            var effects: [String] = []
            if !added.isEmpty { effects.append("values written to \(ids(added)) are not replicated") }
            if !dropped.isEmpty { effects.append("local writes to the table fail") }
            return DriftProblem(table: table.name, node: node, kind: "conflicts_stale", health: health,
                                message: label + "conflict handling was installed for other columns (\(what.joined(separator: "; ")))"
                                    + (effects.isEmpty ? "" : ": " + effects.joined(separator: ", ")),
                                fix: fix(table, node: node))
        }
    }

    /// `apply` reinstalls for added and dropped columns; it does not change a
    /// change- or version-table column's type, nor re-key the version table.
    func fix(_ table: ConflictSQL.Table, node: String) -> String {
        guard case .columns(let added, _, let retyped, let key) = self else { return "mmlite apply" }
        var steps: [String] = []
        if let key {
            steps.append("mmlite apply cannot re-key \(ConflictSQL.versionTable(table.name).sql) (keyed by \(key.map(SQL.identifier).joined(separator: ", "))): on every node, while no writes happen, DROP TABLE \(ConflictSQL.changeTable(table.name).sql), \(ConflictSQL.versionTable(table.name).sql); DELETE FROM mmlite.conflict_tables WHERE table_name = \(SQL.literal(table.registryName)); then mmlite apply (versions are forgotten: existing rows count as never written)")
        } else if !retyped.isEmpty {
            let alters = retyped.map { change in
                "ALTER TABLE \((change.inKey ? ConflictSQL.versionTable(table.name) : ConflictSQL.changeTable(table.name)).sql) ALTER COLUMN \(SQL.identifier(change.column)) TYPE \(change.current);"
            }
            steps.append("mmlite apply does not change column types of the conflict tables: on every node " + alters.joined(separator: " ") + " then mmlite apply")
        } else {
            steps.append("mmlite apply reinstalls it for the current columns (once the table is the same on every node)")
        }
        if !added.isEmpty {
            steps.append("values written to \(added.map(SQL.identifier).joined(separator: ", ")) before that stay on the node that wrote them: rewrite them there afterwards (e.g. UPDATE \(table.name.sql) SET \(SQL.identifier(added[0])) = \(SQL.identifier(added[0])) WHERE \(SQL.identifier(added[0])) IS NOT NULL)")
        }
        steps.append("schema changes made with mmlite ddl keep conflict handling in step")
        return steps.joined(separator: "; ")
    }
}

/// One drift `status` reports: table, node (nil: across nodes), a stable
/// kind, the health it costs, what is wrong and the fix.
public struct DriftProblem: Sendable, Equatable {
    public var table: QualifiedName
    public var node: String?
    public var kind: String
    public var health: Health
    public var message: String
    public var fix: String

    public init(table: QualifiedName, node: String?, kind: String, health: Health = .critical, message: String, fix: String) {
        self.table = table
        self.node = node
        self.kind = kind
        self.health = health
        self.message = message
        self.fix = fix
    }
}

/// What `status` reads on one node for the drift checks.
public struct DriftFacts: Sendable, Equatable {
    /// Columns (search_path = '') of the mesh tables and of the opted-in
    /// tables' change and version tables that exist on the node.
    public var columns: [QualifiedName: [ConflictSQL.Column]]
    /// `mmlite.conflict_tables`: definition by registry name (empty: none).
    public var registry: [String: String]

    public init(columns: [QualifiedName: [ConflictSQL.Column]], registry: [String: String]) {
        self.columns = columns
        self.registry = registry
    }
}

public enum MeshDrift {
    /// Every drift among `nodes` (in config order): each of `tables`
    /// compared across them, and on each of `members` the conflict handling
    /// of the tables that opt in (as `mmlite apply` would install it now).
    public static func problems(config: MeshConfig, tables: [QualifiedName], nodes: [(name: String, facts: DriftFacts)],
                                members: Set<String>) -> [DriftProblem] {
        var problems: [DriftProblem] = []
        for table in tables {
            let shapes = nodes.map { node in (node: node.name, shape: node.facts.columns[table].map(TableShape.init)) }
            problems += SchemaDrift.compare(table, shapes: shapes).problems
        }
        for node in nodes where members.contains(node.name) {
            problems += conflictProblems(config: config, tables: tables, node: node.name, facts: node.facts)
        }
        return problems
    }

    /// On one member: each opted-in table's conflict handling against its
    /// current columns (as `mmlite apply` would install it now).
    public static func conflictProblems(config: MeshConfig, tables: [QualifiedName], node: String, facts: DriftFacts) -> [DriftProblem] {
        var problems: [DriftProblem] = []
        for table in tables {
            guard let policy = config.tableSettings[table]?.conflicts, let columns = facts.columns[table] else { continue }
            let described = ConflictSQL.Table(name: table, columns: columns, policy: policy, nativeApply: config.mesh.conflictApply == .auto,
                                              deltaColumns: config.tableSettings[table]?.deltaColumns ?? [])
            func shape(_ name: QualifiedName) -> [TableShape.Column]? {
                facts.columns[name].map { $0.map { TableShape.Column(name: $0.name, type: $0.type) } }
            }
            let installed = ConflictDrift.Facts(definition: facts.registry[described.registryName],
                                                changeTable: shape(ConflictSQL.changeTable(table)),
                                                versionTable: shape(ConflictSQL.versionTable(table)))
            if let drift = ConflictDrift.assess(described, installed: installed) {
                problems.append(drift.problem(described, node: node))
            }
        }
        return problems
    }

    /// The tables whose columns `status` reads: the mesh tables and the
    /// change and version tables of those that opt in.
    public static func tablesToRead(config: MeshConfig, tables: [QualifiedName]) -> [QualifiedName] {
        tables + tables.filter { config.tableSettings[$0]?.conflicts != nil }
            .flatMap { [ConflictSQL.changeTable($0), ConflictSQL.versionTable($0)] }
    }
}
