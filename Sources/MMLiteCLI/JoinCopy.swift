import Foundation
import MMLiteCore
import PostgresClient

/// Phase 5 of a join: every table in SOURCE's exported snapshot into NODE, in
/// one transaction tagged with the copy-marker origin, whose progress the
/// commit sets to the consistent point (so a re-run knows the copy committed).
struct TableCopy {
    let config: MeshConfig
    let console: Console

    func run(_ copy: JoinProcedure.Copy) throws {
        guard let sourceNode = config.node(named: copy.source), let targetNode = config.node(named: copy.node) else { return }
        let reader = try Connections.connect(sourceNode.dsn)
        defer { reader.close() }
        let writer = try Connections.connect(targetNode.dsn)
        defer { writer.close() }
        try reader.execute(JoinSQL.beginSnapshotRead)
        try reader.execute(JoinSQL.setSnapshot(copy.snapshot))
        try writer.query(JoinSQL.createOrigin(copy.origin))
        for statement in JoinSQL.copySessionSetup(origin: copy.origin) { try writer.execute(statement) }
        if !copy.truncated.isEmpty { try writer.execute(JoinSQL.truncate(copy.truncated)) }
        if !copy.emptied.isEmpty {
            console.print("    emptied \(copy.emptied.map(\.sql).joined(separator: ", ")) on \(copy.node) (--force)")
        }
        var totalRows = 0, totalBytes = 0
        for table in copy.tables {
            let (rows, bytes) = try copyTable(table, from: reader, to: writer)
            totalRows += rows
            totalBytes += bytes
        }
        for statement in JoinSQL.copyCommit(lsn: copy.consistentPoint.description) { try writer.execute(statement) }
        try reader.execute("COMMIT")
        console.print("    copied \(totalRows) rows, \(formatBytes(UInt64(totalBytes))); the copy is committed on \(copy.node) with origin \(copy.origin) at \(copy.consistentPoint)")
    }

    /// One table, with a progress line every second; (rows, bytes).
    func copyTable(_ table: QualifiedName, from reader: PGConnection, to writer: PGConnection) throws -> (Int, Int) {
        let columns = try reader.query(JoinSQL.copyColumns, [table.sql]).named.compactMap { $0["column_name"] }
        let expected = UInt64(max(try reader.query(JoinSQL.tableSize, [table.sql]).first?.int64("bytes") ?? 0, 0))
        let started = Date()
        var lastPrint = Date()
        var copied = 0
        let rows = try reader.copy(JoinSQL.copyOut(table, columns: columns), to: writer, JoinSQL.copyIn(table, columns: columns)) { bytes in
            copied = bytes
            if Date().timeIntervalSince(lastPrint) >= 1 {
                lastPrint = Date()
                let progress = CopyProgress(bytes: UInt64(bytes), expectedBytes: expected, seconds: Date().timeIntervalSince(started))
                console.print("    \(table.sql): \(progress.line)")
            }
        }
        let seconds = Date().timeIntervalSince(started)
        console.print(String(format: "    %@: %d rows, %@ in %.2f s (%@/s)", table.sql, rows, formatBytes(UInt64(copied)), seconds,
                             formatBytes(UInt64(seconds > 0 ? Double(copied) / seconds : 0))))
        return (rows, copied)
    }
}

/// `join --copy-schema`: creates tables on NODE from SOURCE's definitions with
/// `pg_dump --schema-only --format=custom | pg_restore`. Both tools connect
/// themselves; the connection strings reach them as environment variables and
/// passwords through a password file that only this user can read and that is
/// removed afterwards, never on a command line.
struct SchemaCopy {
    let config: MeshConfig
    let console: Console

    struct Failure: Error {
        var message: String
    }

    func create(_ tables: [QualifiedName], from source: String, sourceMajor: Int, on node: String) throws {
        guard let sourceNode = config.node(named: source), let targetNode = config.node(named: node) else { return }
        var lastProblem = "no pg_dump and pg_restore found (install the PostgreSQL client of \(source)'s version, or create the tables on \(node) yourself)"
        for directory in toolDirectories(atLeast: sourceMajor) {
            let dump = directory + "/pg_dump", restore = directory + "/pg_restore"
            guard FileManager.default.isExecutableFile(atPath: dump), FileManager.default.isExecutableFile(atPath: restore) else { continue }
            let outcome = try dumpAndRestore(dump: dump, restore: restore, tables: tables, from: sourceNode.dsn, into: targetNode.dsn)
            if let problem = outcome {
                // A pg_dump older than SOURCE refuses (server version mismatch): try the next one.
                lastProblem = problem
                continue
            }
            console.print("Created \(tables.map(\.sql).joined(separator: ", ")) on \(node) from \(source)'s definitions (\(dump) --schema-only).")
            return
        }
        throw Failure(message: lastProblem)
    }

    /// Directories holding pg_dump, newest major first, then PATH.
    func toolDirectories(atLeast major: Int) -> [String] {
        var directories = (max(major, 10)...30).reversed().map { "/usr/lib/postgresql/\($0)/bin" }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") { directories.append(String(directory)) }
        return directories
    }

    /// pg_dump into a temporary file, then pg_restore from it; nil when both
    /// succeeded, else what went wrong (masked).
    func dumpAndRestore(dump: String, restore: String, tables: [QualifiedName], from sourceDSN: String, into targetDSN: String) throws -> String? {
        let file = NSTemporaryDirectory() + "mmlite-schema-\(getpid())-\(UInt32.random(in: 0..<UInt32.max)).dump"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let dumped = try runTool(dump, ["--schema-only", "--format=custom", "--no-owner", "--no-privileges", "--no-publications",
                                       "--no-subscriptions", "--file=" + file] + tables.map { "--table=" + $0.sql }, dsn: sourceDSN)
        if let dumped { return "\(dump) failed: \(dumped)" }
        let target = try Credentials(dsn: targetDSN)
        // pg_restore connects only when given --dbname: the database name (never a password) goes on its command line.
        let database = target.environment["PGDATABASE"] ?? target.environment["PGUSER"] ?? ProcessInfo.processInfo.environment["USER"] ?? "postgres"
        target.remove()
        if let restored = try runTool(restore, ["--schema-only", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
                                                "--dbname=" + database, file], dsn: targetDSN) {
            return "creating the tables failed: \(restored)"
        }
        return nil
    }

    /// Runs a libpq tool connecting as `dsn` says; nil on success, else its stderr (masked).
    func runTool(_ path: String, _ arguments: [String], dsn: String) throws -> String? {
        let credentials = try Credentials(dsn: dsn)
        defer { credentials.remove() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.environment = credentials.environment
        let errors = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        do { try process.run() } catch { return "\(error)" }
        let text = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus != 0 || process.terminationReason != .exit else { return nil }
        let message = String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return console.redact(message.isEmpty ? "exit status \(process.terminationStatus)" : message)
    }
}

/// The environment for a libpq tool that should connect as `dsn` says: the
/// parameters as PG* variables, the password in a 0600 file (PGPASSFILE).
struct Credentials {
    var environment: [String: String]
    private var passwordFile: String?

    init(dsn: String) throws {
        let (variables, password) = try conninfoEnvironment(dsn)
        var environment = ProcessInfo.processInfo.environment
        for (name, value) in variables { environment[name] = value }
        environment["PGPASSWORD"] = nil
        if let password {
            let path = NSTemporaryDirectory() + "mmlite-pgpass-\(getpid())-\(UInt32.random(in: 0..<UInt32.max))"
            let escaped = password.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ":", with: "\\:")
            // Created 0600 and exclusive: the password is never readable by others, not even briefly.
            let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard descriptor >= 0 else { throw SchemaCopy.Failure(message: "cannot create a password file in \(NSTemporaryDirectory())") }
            let line = Array("*:*:*:*:\(escaped)\n".utf8)
            let written = line.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            close(descriptor)
            guard written == line.count else {
                try? FileManager.default.removeItem(atPath: path)
                throw SchemaCopy.Failure(message: "cannot write the password file \(path)")
            }
            environment["PGPASSFILE"] = path
            passwordFile = path
        }
        self.environment = environment
    }

    func remove() {
        if let passwordFile { try? FileManager.default.removeItem(atPath: passwordFile) }
    }
}
