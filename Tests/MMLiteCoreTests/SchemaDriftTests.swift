import MMLiteCore
import Testing

private func shape(_ columns: [(String, String)], key: [String] = ["id"]) -> TableShape {
    TableShape(columns: columns.map { TableShape.Column(name: $0.0, type: $0.1) }, primaryKey: key)
}

private let base = [("id", "integer"), ("owner", "text"), ("balance", "integer")]

/// What `apply` installed for `accountsTable()`: the change table (meta
/// columns, then the writable user columns) and the version table.
private func installed(_ table: ConflictSQL.Table, definition: String? = nil) -> ConflictDrift.Facts {
    let writable = table.columns.filter { !$0.generated }.map { TableShape.Column(name: $0.name, type: $0.type) }
    let meta = ConflictContract.changeColumns.map { TableShape.Column(name: $0, type: "bigint") }
    let versions = table.keyColumns.map { TableShape.Column(name: $0.name, type: $0.type) }
        + ConflictContract.versionColumns.map { TableShape.Column(name: $0, type: "text") }
    return ConflictDrift.Facts(definition: definition ?? ConflictSQL.definition(table), changeTable: meta + writable, versionTable: versions)
}

@Suite("schema drift between nodes and stale conflict handling")
struct SchemaDriftTests {
    @Test("the same table everywhere: no drift")
    func same() {
        let drift = SchemaDrift.compare(accounts, shapes: [("n1", shape(base)), ("n2", shape(base)), ("n3", shape(base))])
        #expect(drift.differences.isEmpty)
        #expect(drift.problems.isEmpty)
    }

    @Test("a column on some nodes only: named with where it is, and the ALTER for the others")
    func missingColumn() throws {
        let added = shape(base + [("note", "text")])
        let drift = SchemaDrift.compare(accounts, shapes: [("n1", added), ("n2", added), ("n3", shape(base))])
        #expect(drift.differences == [.column("note", type: "text", presentOn: ["n1", "n2"], missingOn: ["n3"])])
        let problem = try #require(drift.problems.first)
        #expect(problem.message == "public.accounts: column note exists on n1, n2 but not on n3")
        #expect(problem.fix.hasPrefix("on n3: ALTER TABLE public.accounts ADD COLUMN note text;"))
        #expect(problem.fix.contains("mmlite ddl 'ALTER TABLE public.accounts ADD COLUMN note text;'"))
        #expect(problem.health == .critical && problem.node == nil && problem.kind == "column_missing")
    }

    @Test("a different type: the most common type is the reference")
    func type() throws {
        let retyped = shape([("id", "integer"), ("owner", "text"), ("balance", "bigint")])
        let drift = SchemaDrift.compare(accounts, shapes: [("n1", retyped), ("n2", shape(base)), ("n3", shape(base))])
        #expect(drift.differences == [.type(column: "balance", [.init(value: "integer", nodes: ["n2", "n3"]), .init(value: "bigint", nodes: ["n1"])])])
        let problem = try #require(drift.problems.first)
        #expect(problem.message == "public.accounts: column balance is integer on n2, n3 but bigint on n1")
        #expect(problem.fix.hasPrefix("on n1: ALTER TABLE public.accounts ALTER COLUMN balance TYPE integer;"))
    }

    @Test("a missing table and a different primary key")
    func tableAndKey() throws {
        let drift = SchemaDrift.compare(accounts, shapes: [("n1", shape(base)), ("n2", shape(base, key: ["id", "owner"])), ("n3", nil)])
        #expect(drift.differences == [.table(presentOn: ["n1", "n2"], missingOn: ["n3"]),
                                      .primaryKey([.init(value: ["id"], nodes: ["n1"]), .init(value: ["id", "owner"], nodes: ["n2"])])])
        let messages = drift.problems.map(\.message)
        #expect(messages == ["public.accounts exists on n1, n2 but not on n3",
                             "public.accounts has primary key (id) on n1 but primary key (id, owner) on n2"])
        #expect(drift.problems[1].fix == "on n2: ALTER TABLE public.accounts DROP CONSTRAINT <its primary key>, ADD PRIMARY KEY (id);")
    }

    @Test("doctor tells the same comparison from one node's side")
    func doctor() throws {
        var n1 = healthyFacts("n1"), n3 = healthyFacts("n3")
        n3.tables[users]!.columns.append(ColumnFacts(name: "note", type: "text"))
        n1.tables[users]!.columns[0].keyPosition = 1
        let failures = try run([n1, healthyFacts("n2"), n3]).filter { $0.status == .failure && $0.check == "table" }
        #expect(failures.contains { $0.node == "n3" && $0.message.contains("column note exists only here, not on n1") })
        #expect(failures.contains { $0.node == "n1" && $0.message.contains("primary key is (id) here but none on n2") })
    }

    @Test("conflict handling installed for the current columns: nothing; for fewer columns: critical, apply fixes it")
    func addedColumn() throws {
        let table = accountsTable()
        #expect(ConflictDrift.assess(table, installed: installed(table)) == nil)
        // Delta columns' own change- and version-table columns are neither user columns nor key.
        var counted = table
        counted.deltaColumns = ["balance"]
        var withDeltas = installed(counted)
        withDeltas.changeTable! += ["mm_life_ms", "mm_life_counter", "mm_life_node", "mm_delta_balance"].map { TableShape.Column(name: $0, type: "bigint") }
        withDeltas.versionTable! += ["life_ms", "life_counter", "life_node"].map { TableShape.Column(name: $0, type: "bigint") }
        #expect(ConflictDrift.assess(counted, installed: withDeltas) == nil)
        var wider = table
        wider.columns.append(.init(name: "note", type: "text"))
        let drift = try #require(ConflictDrift.assess(wider, installed: installed(table)))
        #expect(drift == .columns(added: ["note"], dropped: [], retyped: [], key: nil))
        #expect(drift.health == .critical)
        let problem = drift.problem(wider, node: "n2")
        #expect(problem.message == "public.accounts on n2: conflict handling was installed for other columns (note added since): values written to note are not replicated")
        #expect(problem.fix.hasPrefix("mmlite apply reinstalls it"))
        #expect(problem.fix.contains("UPDATE public.accounts SET note = note WHERE note IS NOT NULL"))
    }

    @Test("a dropped column is drift until apply reinstalls (the change table keeps it, unused)")
    func droppedColumn() throws {
        let table = accountsTable()
        var narrower = table
        narrower.columns.removeAll { $0.name == "balance" }
        let drift = try #require(ConflictDrift.assess(narrower, installed: installed(table)))
        #expect(drift == .columns(added: [], dropped: ["balance"], retyped: [], key: nil))
        #expect(drift.problem(narrower, node: "n1").message.contains("local writes to the table fail"))
        // After apply: registered for the narrower table, the change table still has balance.
        #expect(ConflictDrift.assess(narrower, installed: installed(table, definition: ConflictSQL.definition(narrower))) == nil)
    }

    @Test("a retyped column or a new primary key: apply cannot fix it, the fix says what can")
    func retypedAndKey() throws {
        let table = accountsTable()
        var retyped = table
        retyped.columns[0].type = "bigint"
        let drift = try #require(ConflictDrift.assess(retyped, installed: installed(table, definition: ConflictSQL.definition(retyped))))
        #expect(drift == .columns(added: [], dropped: [], retyped: [.init(column: "id", installed: "integer", current: "bigint", inKey: false),
                                                                   .init(column: "id", installed: "integer", current: "bigint", inKey: true)], key: nil),
                "even after apply: it does not change column types")
        let fix = drift.problem(retyped, node: "n1").fix
        #expect(fix.contains("mmlite apply does not change column types"))
        #expect(fix.contains("ALTER TABLE mmlite.\"public.accounts$changes\" ALTER COLUMN id TYPE bigint;"))
        #expect(fix.contains("ALTER TABLE mmlite.\"public.accounts$versions\" ALTER COLUMN id TYPE bigint;"))
        var rekeyed = table
        rekeyed.columns[1].keyPosition = 2
        let key = try #require(ConflictDrift.assess(rekeyed, installed: installed(table)))
        #expect(key == .columns(added: [], dropped: [], retyped: [], key: ["id"]))
        #expect(key.problem(rekeyed, node: "n1").message.contains("primary key is (id, owner), was (id)"))
        #expect(key.problem(rekeyed, node: "n1").fix.contains("cannot re-key"))
        var keyless = table
        keyless.columns[0].keyPosition = nil
        #expect(ConflictDrift.assess(keyless, installed: installed(table))?.problem(keyless, node: "n1").message.contains("primary key is none, was (id)") == true)
    }

    @Test("not installed, objects missing, another generation or policy")
    func otherStates() {
        let table = accountsTable()
        #expect(ConflictDrift.assess(table, installed: ConflictDrift.Facts(definition: nil, changeTable: nil, versionTable: nil)) == .notInstalled)
        #expect(ConflictDrift.notInstalled.health == .warning)
        var missing = installed(table)
        missing.changeTable = nil
        #expect(ConflictDrift.assess(table, installed: missing) == .objectsMissing)
        let outdated = ConflictDrift.assess(table, installed: installed(table, definition: "g3-last-update-wins-0123456789abcdef"))
        #expect(outdated == .outdated && outdated?.health == .warning)
        #expect(outdated?.problem(table, node: "n1").fix == "mmlite apply (reinstalls it)")
    }

    @Test("status: drift across the reachable nodes, conflict handling on members only")
    func mesh() throws {
        let config = try MeshConfig.parse("""
            [mesh]
            name = "shop"
            tables = ["public.*"]
            [[nodes]]
            name = "n1"
            dsn = "host=h1"
            [[nodes]]
            name = "n2"
            dsn = "host=h2"
            [[nodes]]
            name = "n3"
            dsn = "host=h3"
            [tables."public.accounts"]
            conflicts = "last-update-wins"
            """)
        let table = accountsTable()
        let plain = QualifiedName(schema: "public", name: "plain")
        #expect(MeshDrift.tablesToRead(config: config, tables: [accounts, plain])
                == [accounts, plain, ConflictSQL.changeTable(accounts), ConflictSQL.versionTable(accounts)])
        func facts(_ accountsColumns: [ConflictSQL.Column], plainColumns: [ConflictSQL.Column]) -> DriftFacts {
            let objects = installed(table)
            func columns(_ shape: [TableShape.Column]?) -> [ConflictSQL.Column] { (shape ?? []).map { ConflictSQL.Column(name: $0.name, type: $0.type) } }
            return DriftFacts(columns: [accounts: accountsColumns, plain: plainColumns,
                                       ConflictSQL.changeTable(accounts): columns(objects.changeTable),
                                       ConflictSQL.versionTable(accounts): columns(objects.versionTable)],
                              registry: [table.registryName: ConflictSQL.definition(table)])
        }
        let plainColumns: [ConflictSQL.Column] = [.init(name: "id", type: "integer", keyPosition: 1), .init(name: "owner", type: "text")]
        let healthy = facts(table.columns, plainColumns: plainColumns)
        #expect(MeshDrift.problems(config: config, tables: [accounts, plain], nodes: [("n1", healthy), ("n2", healthy), ("n3", healthy)],
                                   members: ["n1", "n2", "n3"]).isEmpty)
        let noted = facts(table.columns + [.init(name: "note", type: "text")], plainColumns: plainColumns + [.init(name: "note", type: "text")])
        let problems = MeshDrift.problems(config: config, tables: [accounts, plain], nodes: [("n1", noted), ("n2", healthy), ("n3", noted)],
                                          members: ["n1", "n2"])
        #expect(problems.map(\.message) == [
            "public.accounts: column note exists on n1, n3 but not on n2",
            "public.plain: column note exists on n1, n3 but not on n2",
            "public.accounts on n1: conflict handling was installed for other columns (note added since): values written to note are not replicated",
        ], "n3 is not a member: its conflict handling is not judged")
    }

    @Test("doctor's conflict_handling check: stale fails on a member, matching passes; apply does not run it (it reinstalls)")
    func doctorConflictHandling() throws {
        let config = try usersOptedInConfig()
        let table = ConflictSQL.Table(name: users, columns: [.init(name: "id", type: "uuid", keyPosition: 1), .init(name: "name", type: "text")],
                                      policy: .lastUpdateWins)
        func objects(_ registered: ConflictSQL.Table, current: ConflictSQL.Table) -> DriftFacts {
            let facts = installed(registered)
            func columns(_ shape: [TableShape.Column]?) -> [ConflictSQL.Column] { (shape ?? []).map { ConflictSQL.Column(name: $0.name, type: $0.type) } }
            return DriftFacts(columns: [users: current.columns, ConflictSQL.changeTable(users): columns(facts.changeTable),
                                       ConflictSQL.versionTable(users): columns(facts.versionTable)],
                              registry: [registered.registryName: ConflictSQL.definition(registered)])
        }
        var wider = table
        wider.columns.append(.init(name: "note", type: "text"))
        var n1 = healthyFacts("n1"), n2 = healthyFacts("n2")
        n1.conflictObjects = objects(table, current: wider)
        n2.conflictObjects = objects(table, current: table)
        let results = Checks(config: config, facts: [n1, n2], tables: [departments, users]).evaluate().filter { $0.check == "conflict_handling" }
        #expect(results.map(\.node) == ["n1", "n2"])
        #expect(results[0].status == .failure && results[0].message.contains("public.users on n1: conflict handling was installed for other columns (note added since)"))
        #expect(results[1].status == .pass)
        #expect(Checks(config: config, facts: [n1, n2], tables: [departments, users], purpose: .apply).evaluate().allSatisfy { $0.check != "conflict_handling" })
    }
}
