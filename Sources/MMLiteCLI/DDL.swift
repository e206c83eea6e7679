import ArgumentParser
import Foundation
import MMLiteCore
import PostgresClient

struct DDLCommand: ParsableCommand, MMLiteRunnable {
    static let configuration = CommandConfiguration(
        commandName: "ddl",
        abstract: "Run a schema migration on every node at once, while the application writes.",
        discussion: """
        Fences the mesh's tables on every member (local writes to them fail with SQLSTATE 40001, serialization_failure: retry), waits until every link has delivered what was written before, then runs the migration on every node in one transaction each, with conflict handling and the publication following the new tables and columns, PREPAREs it everywhere and then COMMITs it everywhere. If it fails on any node before the first commit, it is rolled back on every node and nothing changed. Statements PostgreSQL runs only outside a transaction (CREATE INDEX CONCURRENTLY, ...) run afterwards, node by node, in their order. An interrupted migration is shown by `mmlite status` and finished by `mmlite ddl --resume`. See docs/operations.md.

        Exit code: 0 done, 1 failed and rolled back (nothing changed), 2 refused, 64 usage, 69 a node is unreachable, 75 stopped after committing somewhere (run --resume), 78 invalid configuration.
        """
    )
    @OptionGroup var global: GlobalOptions
    @Argument(help: "The migration: one or more SQL statements.") var sql: String?
    @Option(help: ArgumentHelp("Read the migration from this file ('-': standard input).", valueName: "file")) var file: String?
    @Flag(help: "Finish an interrupted migration: commit it where it committed anywhere or was prepared everywhere, else roll it back; drop fences.") var resume = false
    @Flag(help: "Print per node what would run and change nothing.") var dryRun = false
    @Option(help: ArgumentHelp("Longest wait for the links to deliver what was written before the fence.", valueName: "seconds")) var timeout: Double = 300
    @Option(help: ArgumentHelp("Longest wait of a statement for a table lock before the migration gives up.", valueName: "seconds")) var lockTimeout: Int = 10

    func execute(_ context: Context) throws -> ExitStatus {
        global.prepare(context)
        let config = try loadConfig(global.config, console: context.console)
        let script = try migrationText()
        if resume && script != nil { throw CLIError(.usage, "--resume finishes an interrupted migration and takes no SQL") }
        if !resume && script == nil { throw CLIError(.usage, "give the migration as an argument or with --file FILE (or --resume)") }
        let statements = SQLScript.statements(script ?? "")
        if !resume && statements.isEmpty { throw CLIError(.usage, "the migration holds no statement") }
        let request = DDLProcedure.Request(config: config, statements: statements, resume: resume, dryRun: dryRun,
                                           timeout: timeout, lockTimeout: lockTimeout, id: Self.newID())
        return DDLRunner(request: request, context: context).run()
    }

    func migrationText() throws -> String? {
        if sql != nil, file != nil { throw CLIError(.usage, "give the migration either as an argument or with --file, not both") }
        guard let file else { return sql }
        if file == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw CLIError(.usage, "cannot read the migration file \(file)")
        }
        return text
    }

    /// Sortable and unique enough: UTC time and a random suffix.
    static func newID() -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss"
        return formatter.string(from: Date()) + "_" + String(UInt32.random(in: 0..<UInt32.max), radix: 16)
    }
}

/// Performs the actions of a `DDLProcedure`.
final class DDLRunner {
    let request: DDLProcedure.Request
    let console: Console
    let io: ProcedureIO
    private var preflight: Preflight?
    /// Nodes whose connection carries the migration's replication origin (set up by `prepare`).
    private var withOrigin: Set<String> = []

    init(request: DDLProcedure.Request, context: Context) {
        self.request = request
        console = context.console
        io = ProcedureIO(context: context, timeout: request.timeout, dryRun: request.dryRun)
    }

    var config: MeshConfig { request.config }

    func run() -> ExitStatus {
        var procedure = DDLProcedure(request)
        var action = procedure.start()
        while true {
            if case .finish(let outcome) = action { return io.conclude(outcome, config: config) }
            let event: DDLProcedure.Event
            if request.dryRun, action.changes || !action.statements.isEmpty {
                io.show(action.statements)
                event = simulated(action)
            } else {
                do { event = try perform(action) } catch let error as PGError {
                    event = .failed(console.redact(error.description))
                } catch {
                    event = .failed(console.redact("\(error)"))
                }
            }
            action = procedure.next(event)
        }
    }

    /// A dry run's answer: what a real run would most likely see.
    func simulated(_ action: DDLProcedure.Action) -> DDLProcedure.Event {
        switch action {
        case .readCurrentPosition(let node): return .position(.placeholder("L_\(node)"))
        case .prepare: return .prepared(DDLProcedure.Prepared())
        default: return .done
        }
    }

    func connection(_ name: String) throws -> PGConnection {
        guard let connection = preflight?.connections[name] ?? preflight?.connections.reconnect(name) else {
            throw PGError(kind: .connection, message: "cannot connect to \(name)")
        }
        return connection
    }

    func perform(_ action: DDLProcedure.Action) throws -> DDLProcedure.Event {
        switch action {
        case .observe:
            return .observed(try observe())
        case .say(let line):
            console.print(line)
        case .fence(let node, let tables):
            try fence(node, tables)
        case .unfence(let node, let tables):
            for table in try existing(tables, on: node) { try run(DDLSQL.unfence(table), on: node) }
        case .readCurrentPosition(let node):
            return .position(try connection(node).query(JoinSQL.currentPosition()).scalar.flatMap(LSN.init).map(Position.lsn))
        case .wait(let condition):
            return try io.wait(condition, on: try connection(condition.node), done: .done, timedOut: { .timedOut($0) }, failed: { .failed($0) })
        case .prepare(let work):
            return try prepare(work)
        case .commitPrepared(let node, let gid):
            try run(DDLSQL.commitPrepared(gid: gid), on: node)
            resetOrigin(node)
            console.print("    \(node): committed")
        case .rollbackPrepared(let node, let gid):
            try run(DDLSQL.rollbackPrepared(gid: gid), on: node)
            resetOrigin(node)
        case .refreshSubscription(let node, let subscription):
            try run(DDLSQL.refresh(subscription), on: node)
        case .runOutside(let node, let statement):
            try run(statement, on: node)
        case .finish:
            break
        }
        return .done
    }

    /// After its commit or rollback: the connection's later statements are ordinary local writes again.
    func resetOrigin(_ node: String) {
        guard withOrigin.remove(node) != nil else { return }
        _ = try? connection(node).execute(DDLSQL.originReset)
    }

    func run(_ sql: String, on node: String) throws {
        console.debug("[\(node)] \(sql)")
        try connection(node).execute(sql)
    }

    /// The tables of `tables` that exist on `node`.
    func existing(_ tables: [QualifiedName], on node: String) throws -> [QualifiedName] {
        let present = try Set(tableSet(DDLSQL.userTables, on: node))
        return tables.filter { present.contains($0) }
    }

    func tableSet(_ sql: String, on node: String) throws -> [QualifiedName] {
        try connection(node).query(sql).named.compactMap(Catalog.qualifiedName)
    }

    /// One transaction per table: holding one table's lock while waiting for
    /// the next would deadlock with a writer or apply worker that holds the
    /// next and waits for the first.
    func fence(_ node: String, _ tables: [QualifiedName]) throws {
        let connection = try connection(node)
        let present = try existing(tables, on: node)
        for sql in [DDLSQL.fenceFunction] + present.map(DDLSQL.fence) {
            try connection.execute("BEGIN")
            do {
                try connection.execute(DDLSQL.lockTimeout(seconds: request.lockTimeout))
                try connection.execute(sql)
                try connection.execute("COMMIT")
            } catch {
                _ = try? connection.execute("ROLLBACK")
                throw error
            }
        }
        console.print("    \(node): fenced")
    }

    func observe() throws -> DDLProcedure.Observation {
        let preflight = Preflight(config: config, console: console)
        self.preflight = preflight
        var unreachable: [String: String] = [:]
        for facts in preflight.unreachable { unreachable[facts.name] = facts.failure ?? "" }
        var observation = DDLProcedure.Observation(states: preflight.states, unreachable: unreachable, tables: preflight.tables)
        for facts in preflight.facts where facts.reachable {
            let connection = try connection(facts.name)
            observation.prepared[facts.name] = try connection.query(DDLSQL.preparedMigrations(mesh: config.mesh.name)).named.compactMap { $0["gid"] }
            observation.fenced[facts.name] = try tableSet(DDLSQL.fencedTables, on: facts.name)
            observation.maxPreparedTransactions[facts.name] = try connection.query("SELECT current_setting('max_prepared_transactions')::int AS value").first?.int("value") ?? 0
        }
        let ids = Set(observation.prepared.values.flatMap { $0 }).map { String($0.dropFirst(DDLSQL.gid(mesh: config.mesh.name, id: "").count)) }
        for facts in preflight.facts where facts.reachable && !ids.isEmpty {
            let connection = try connection(facts.name)
            guard try connection.query(DDLSQL.migrationLogExists).first?.bool("present") == true else { continue }
            observation.recorded[facts.name] = Set(try ids.filter { try connection.query(DDLSQL.migrationRecorded(id: $0)).first?.int("recorded") == 1 })
        }
        return observation
    }

    /// One node's transaction, up to PREPARE; on any failure it is rolled back here.
    func prepare(_ work: DDLProcedure.Work) throws -> DDLProcedure.Event {
        let connection = try connection(work.node)
        try connection.execute("BEGIN")
        withOrigin.insert(work.node)
        do {
            let result = try MigrationTransaction(work: work, config: config, connection: connection, console: console).run()
            try connection.execute(DDLSQL.prepare(gid: work.gid))
            console.print("    \(work.node): prepared")
            return .prepared(result)
        } catch {
            _ = try? connection.execute("ROLLBACK")
            resetOrigin(work.node)
            if let error = error as? PGError { return .failed("on \(work.node): " + console.redact(error.description)) }
            return .failed("on \(work.node): " + console.redact("\(error)"))
        }
    }
}
