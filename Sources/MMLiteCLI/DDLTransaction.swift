import MMLiteCore
import PostgresClient

/// One node's migration transaction (opened by the caller, prepared after):
/// the statements, then conflict handling and the publication following what
/// they did. Reads what changed from the catalog inside the transaction.
struct MigrationTransaction {
    let work: DDLProcedure.Work
    let config: MeshConfig
    let connection: PGConnection
    let console: Console

    func execute(_ sql: String) throws {
        console.debug("[\(work.node)] \(sql)")
        try connection.execute(sql)
    }

    func userTables() throws -> Set<QualifiedName> {
        Set(try connection.query(DDLSQL.userTables).named.compactMap(Catalog.qualifiedName))
    }

    func run() throws -> DDLProcedure.Prepared {
        try execute(DDLSQL.lockTimeout(seconds: work.lockTimeout))
        for statement in DDLSQL.originSetup(work.origin) { try execute(statement) }
        // Dropped first, in this transaction: the migration's own statements
        // (a TRUNCATE, a backfill) pass, everyone else sees the fence until COMMIT PREPARED.
        let before = try userTables()
        for table in work.unfence where before.contains(table) { try execute(DDLSQL.unfence(table)) }
        try execute(ConflictSQL.allowTruncate)
        var outside: [Int] = []
        for (index, statement) in work.statements.enumerated() {
            try execute("SAVEPOINT mmlite_statement")
            do {
                try execute(statement)
            } catch let error as PGError where SQLState(error.sqlState) == .activeSQLTransaction {
                try execute("ROLLBACK TO SAVEPOINT mmlite_statement")
                outside.append(index)
                continue
            }
            try execute("RELEASE SAVEPOINT mmlite_statement")
        }
        let after = try userTables()
        let created = after.subtracting(before).filter { table in config.mesh.tables.contains { $0.matches(table) } }.sorted()
        let dropped = before.subtracting(after).filter { work.tables.contains($0) }.sorted()
        try execute("SET LOCAL search_path TO ''")
        try followConflictHandling(tables: (work.tables + created).filter { after.contains($0) }, dropped: dropped)
        if work.member && !created.isEmpty {
            let published = ConflictSQL.publishedTables(created, settings: config.tableSettings)
            try execute("ALTER PUBLICATION \(SQL.identifier(config.names.publication)) ADD TABLE \(published.map(\.sql).joined(separator: ", "))")
            // Until every subscription knows them, a write to them would reach no one.
            for table in created { try execute(DDLSQL.fence(table)) }
        }
        try execute(work.record)
        return DDLProcedure.Prepared(outside: outside, created: created, dropped: dropped)
    }

    /// Opted-in tables whose columns changed get conflict handling for the new
    /// columns (`ConflictSQL.reshape`); dropped ones lose theirs.
    func followConflictHandling(tables: [QualifiedName], dropped: [QualifiedName]) throws {
        let optedIn = tables.filter { config.tableSettings[$0]?.conflicts != nil }
        let droppedOptedIn = dropped.filter { config.tableSettings[$0]?.conflicts != nil }
        guard !optedIn.isEmpty || !droppedOptedIn.isEmpty else { return }
        try execute(ConflictSQL.shared)
        let registry = try Catalog.conflictRegistry(connection) ?? [:]
        for name in optedIn {
            let table = ConflictSQL.Table(name: name, columns: try ConflictSetup.columnsInTransaction(of: name, connection),
                                          policy: config.tableSettings[name]?.conflicts ?? .lastUpdateWins,
                                          nativeApply: config.mesh.conflictApply == .auto,
                                          deltaColumns: config.tableSettings[name]?.deltaColumns ?? [])
            guard registry[table.registryName] != ConflictSQL.definition(table) else { continue }
            try execute(try ConflictSQL.reshape(table, changeColumns: try stored(ConflictSQL.changeTable(name)),
                                                versionColumns: try stored(ConflictSQL.versionTable(name)), node: work.node))
        }
        for name in droppedOptedIn {
            try execute(ConflictSQL.drop(registryName: name.schema + "." + name.name, table: name))
        }
    }

    func stored(_ table: QualifiedName) throws -> [ConflictSQL.Column] {
        try connection.query(ConflictSQL.storedColumns, [table.sql]).named.compactMap { row in
            guard let name = row["column_name"], let type = row["type"] else { return nil }
            return ConflictSQL.Column(name: name, type: type)
        }
    }
}
