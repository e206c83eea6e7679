import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

// Managed PostgreSQL (issue 14): the whole mesh lifecycle as a role that is
// not a superuser, with only the documented grants, over scram password
// authentication, on servers without mmlite.so (links use native
// `origin = none`, last-update-wins the SQL apply trigger).

/// The set-up of the admin role: `documented` is the block docs/security.md
/// shows (test `docsQuoteTheSetup` keeps them equal), and the tests run its
/// statements, or the same set-up one right short.
enum ManagedSetup {
    static let role = "app_admin"
    static let database = "app"
    /// The password in `documented`; the tests use a random one.
    static let documentedPassword = "s3cret"

    /// docs/security.md, "Managed PostgreSQL", verbatim (psql: `\c` changes the database).
    static let documented = #"""
        CREATE ROLE app_admin LOGIN REPLICATION PASSWORD 's3cret';
        GRANT pg_create_subscription TO app_admin;
        CREATE DATABASE app OWNER app_admin;      -- or, for an existing one: GRANT CREATE ON DATABASE app TO app_admin;
        -- only for mmlite join:
        GRANT SET ON PARAMETER session_replication_role TO app_admin;
        \c app
        -- only for mmlite join; function privileges belong to a database, so run this in the mesh's database:
        GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_drop(text),
            pg_replication_origin_progress(text, boolean), pg_replication_origin_session_setup(text),
            pg_replication_origin_session_reset(), pg_replication_origin_xact_setup(pg_lsn, timestamp with time zone)
            TO app_admin;
        """#

    /// The rights the set-up grants, each of which a test leaves out.
    enum Grant: String, CaseIterable, Sendable, CustomTestStringConvertible {
        /// `REPLICATION` in CREATE ROLE: slots and replication connections.
        case replication
        /// `GRANT pg_create_subscription`: subscriptions (16+).
        case createSubscription
        /// CREATE on the database (here: by owning it): publication, schema mmlite, subscriptions.
        case createOnDatabase
        /// Ownership of the mesh's tables (app_admin creates them): publication, triggers.
        case tableOwnership
        /// `GRANT SET ON PARAMETER session_replication_role` (join's copy).
        case sessionReplicationRole
        /// `GRANT EXECUTE` on the replication-origin functions (join's copy and positions).
        case originFunctions

        /// Only `mmlite join` needs it (apply does not).
        var forJoin: Bool { self == .sessionReplicationRole || self == .originFunctions }

        /// What one of doctor's `fix:` lines must contain for it (all of the parts).
        var fix: [String] {
            switch self {
            case .replication: ["ALTER ROLE \(role) REPLICATION"]
            case .createSubscription: ["GRANT pg_create_subscription TO \(role)"]
            case .createOnDatabase: ["GRANT CREATE ON DATABASE \(database) TO \(role)"]
            case .tableOwnership: ["ALTER TABLE public.accounts OWNER TO \(role)"]
            case .sessionReplicationRole: ["GRANT SET ON PARAMETER session_replication_role TO \(role)"]
            case .originFunctions: ["GRANT EXECUTE ON FUNCTION", "pg_replication_origin_session_setup(text)", "TO \(role)"]
            }
        }

        /// Whether doctor's output has a fix line with every part of `fix`.
        func isNamed(in output: String) -> Bool {
            output.split(separator: "\n").contains { line in line.contains("fix:") && fix.allSatisfy { line.contains($0) } }
        }

        /// The statement of `documented` that grants it (nil: not a statement of its own).
        var statementPrefix: String? {
            switch self {
            case .createSubscription: "GRANT pg_create_subscription"
            case .sessionReplicationRole: "GRANT SET ON PARAMETER session_replication_role"
            case .originFunctions: "GRANT EXECUTE ON FUNCTION"
            default: nil
            }
        }

        var testDescription: String { "without \(rawValue)" }
    }

    /// `documented` as statements, each with the database it runs in.
    static func documentedStatements() -> [(database: String, sql: String)] {
        var result: [(database: String, sql: String)] = []
        var current = "postgres", buffer = ""
        for line in documented.split(separator: "\n", omittingEmptySubsequences: false) {
            let code = line.range(of: "--").map { String(line[..<$0.lowerBound]) } ?? String(line)
            if code.hasPrefix("\\c ") { current = code.dropFirst(3).trimmingCharacters(in: .whitespaces); continue }
            buffer += code + "\n"
            while let end = buffer.firstIndex(of: ";") {
                let statement = buffer[..<end].trimmingCharacters(in: .whitespacesAndNewlines)
                if !statement.isEmpty { result.append((current, statement)) }
                buffer = String(buffer[buffer.index(after: end)...])
            }
        }
        return result
    }

    /// The statements a superuser runs on every node: `documented` with
    /// `password`; `without`: the same set-up lacking that one right.
    static func statements(password: String, without missing: Grant? = nil) throws -> [(database: String, sql: String)] {
        var result = documentedStatements().map {
            (database: $0.database, sql: $0.sql.replacingOccurrences(of: "'\(documentedPassword)'", with: "'\(password)'"))
        }
        func index(_ prefix: String) throws -> Int {
            guard let found = result.firstIndex(where: { $0.sql.hasPrefix(prefix) }) else {
                throw HarnessError("the documented set-up has no statement starting with \(prefix)")
            }
            return found
        }
        switch missing {
        case .replication?:
            let role = try index("CREATE ROLE")
            result[role].sql = result[role].sql.replacingOccurrences(of: " REPLICATION", with: "")
        case .createOnDatabase?:
            // Owned by the superuser: the role may connect and create tables in
            // schema public, but not create schemas, publications or subscriptions.
            let create = try index("CREATE DATABASE")
            result[create].sql = "CREATE DATABASE \(database)"
            result.insert((database, "GRANT CREATE ON SCHEMA public TO \(role)"), at: create + 1)
        case let grant? where grant.statementPrefix != nil:
            result.remove(at: try index(grant.statementPrefix!))
        default:
            break   // tableOwnership: the tables' owner differs, not the set-up
        }
        return result
    }

    /// The statement undoing `grant`'s (GRANT ... TO role → REVOKE ... FROM role).
    static func revoke(_ grant: Grant) throws -> (database: String, sql: String) {
        guard let prefix = grant.statementPrefix,
              let statement = documentedStatements().first(where: { $0.sql.hasPrefix(prefix) }),
              statement.sql.hasSuffix(" TO \(role)") else { throw HarnessError("no statement to revoke for \(grant)") }
        let body = statement.sql.dropFirst("GRANT".count).dropLast(" TO \(role)".count)
        return (statement.database, "REVOKE" + body + " FROM \(role)")
    }

    /// The mesh's tables, created by app_admin: `accounts` opts in to
    /// last-update-wins (the shape of ConflictTests' table, so that
    /// `randomWorkload` writes it), `events` does not (each node writes its own keys).
    static let accounts = "CREATE TABLE public.accounts (id int PRIMARY KEY, owner text, balance int)"
    /// bigserial: apply converts its sequence as app_admin (the writers give explicit ids; the sequence checks insert without).
    static let events = "CREATE TABLE public.events (id bigserial PRIMARY KEY, payload text NOT NULL, kind int)"
}

/// 16+ installations from MMLITE_PG_CONFIGS that can be copied without mmlite.so.
let managedInstallations: [PGInstallation] = {
    let all = (try? PGInstallation.fromEnvironment()) ?? []
    let usable = all.filter { $0.major >= 16 && $0.isSelfContained }
    for skipped in all where !usable.contains(where: { $0.pgConfig == skipped.pgConfig }) {
        print("ManagedTests: not on \(skipped) at \(skipped.root): \(skipped.major < 16 ? "before 16 (subscriptions need a superuser)" : "not self-contained, cannot be copied without mmlite.so")")
    }
    if usable.isEmpty {
        print("ManagedTests: disabled: MMLITE_PG_CONFIGS has no self-contained PostgreSQL 16 or later (have: \(all.map { "\($0.major) at \($0.root)" }.joined(separator: ", ")))")
    }
    return usable
}()

/// Clusters of an installation without mmlite.so, scram for every TCP
/// connection, prepared with `ManagedSetup` (or one right short of it).
final class ManagedMesh {
    let mesh: TestMesh
    let password = "Mm" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    let passfile: String

    init(_ count: Int, installation original: PGInstallation, without missing: ManagedSetup.Grant? = nil) throws {
        let copy = try original.withoutMMLite()
        guard !copy.hasMMLitePlugin else { throw HarnessError("\(copy.root) has mmlite.so") }
        // A managed service lists no mmlite among the output plugins.
        let settings = copy.knowsOutputPluginLibraries ? ["output_plugin_libraries": "'pgoutput, test_decoding'"] : [:]
        mesh = try TestMesh(count, settings: Dictionary(uniqueKeysWithValues: (1...count).map { ($0, settings) }),
                            schema: Dictionary(uniqueKeysWithValues: (1...count).map { ($0, "SELECT 1") }),
                            installation: copy, authentication: .scram)
        passfile = mesh.harness.directory + "/pgpass"
        guard FileManager.default.createFile(atPath: passfile, contents: Data("*:*:*:\(ManagedSetup.role):\(password)\n".utf8),
                                             attributes: [.posixPermissions: 0o600]) else { throw HarnessError("could not write \(passfile)") }
        for cluster in mesh.clusters {
            for (database, sql) in try ManagedSetup.statements(password: password, without: missing) {
                try cluster.execute(sql, database: database)
            }
            cluster.database = ManagedSetup.database
            if missing == .tableOwnership {
                try cluster.execute(ManagedSetup.accounts)   // the superuser's
                try admin(cluster).execute(ManagedSetup.events)
            } else {
                try admin(cluster).execute(ManagedSetup.accounts + "; " + ManagedSetup.events)
            }
        }
    }

    subscript(_ index: Int) -> Cluster { mesh[index] }
    var clusters: [Cluster] { mesh.clusters }

    /// A connection as app_admin over TCP (scram).
    func admin(_ cluster: Cluster) throws -> PGConnection {
        try PGConnection(adminConninfo(cluster))
    }

    func adminConninfo(_ cluster: Cluster) -> String {
        cluster.tcpConninfo(user: ManagedSetup.role, extra: "password=\(password)")
    }

    /// How mmlite connects: the password from a 0600 password file.
    func dsn(_ index: Int) -> String { self[index].tcpConninfo(user: ManagedSetup.role, extra: "passfile=\(passfile)") }

    /// How subscriptions connect: a non-superuser's must carry the password itself (16+).
    func peerDSN(_ index: Int) -> String { adminConninfo(self[index]) }

    func writeConfig(members: [Int]) throws {
        var text = """
        [mesh]
        name = "shop"
        tables = ["public.accounts", "public.events"]

        """
        for index in members {
            text += "\n[[nodes]]\nname = \"n\(index)\"\ndsn = \"\(dsn(index))\"\npeer_dsn = \"\(peerDSN(index))\"\n"
        }
        // balance is a delta column: counters merge on the SQL apply path too.
        text += "\n[tables.\"public.accounts\"]\nconflicts = \"last-update-wins\"\ndelta_columns = [\"balance\"]\n"
        try text.write(toFile: mesh.configPath, atomically: true, encoding: .utf8)
    }

    func mmlite(_ arguments: [String]) -> Run { mesh.mmlite(arguments) }

    /// mmlite's objects on node `index` (publication, slots, subscriptions), and its schema.
    func objects(_ index: Int) throws -> [String] {
        try TestMesh.objects(self[index])
            + (try self[index].execute("SELECT 'schema:' || nspname FROM pg_namespace WHERE nspname = 'mmlite'").rows.compactMap { $0[0] })
    }

    /// What a member of a complete mesh of `members` holds.
    func completeObjects(_ index: Int, members: [Int]) -> [String] {
        let others = members.filter { $0 != index }
        return ["publication:mmlite_shop"] + others.map { "slot:mmlite_shop_n\($0)" }.sorted()
            + others.map { "subscription:mmlite_shop_from_n\($0)" }.sorted() + ["schema:mmlite"]
    }

    /// The function behind node `index`'s apply trigger of accounts.
    func applyTriggerFunction(_ index: Int) throws -> String {
        try self[index].scalar("SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgname = 'mmlite_apply' AND tgrelid = 'mmlite.\"public.accounts$changes\"'::regclass") ?? ""
    }

    /// Stops (or restarts) every subscription of node `index` from the other `members`.
    func setReceiving(_ index: Int, members: [Int], _ enabled: Bool) throws {
        for other in members where other != index {
            try self[index].execute("ALTER SUBSCRIPTION mmlite_shop_from_n\(other) \(enabled ? "ENABLE" : "DISABLE")")
        }
    }

    /// Waits until every slot of `members` has confirmed every local write made so far.
    func quiesce(_ members: [Int], timeout: Double = 60) -> Bool {
        let targets = members.map { (try? self[$0].scalar("SELECT pg_current_wal_lsn()")) ?? nil }
        return waitUntil(timeout: timeout) {
            try zip(members, targets).allSatisfy { index, target in
                guard let target else { return false }
                return try self[index].scalar("""
                    SELECT bool_and(confirmed_flush_lsn >= '\(target)'::pg_lsn) AND count(*) = \(members.count - 1)
                    FROM pg_replication_slots WHERE slot_name LIKE 'mmlite_shop_%'
                    """) == "t"
            }
        }
    }

    func fingerprints(_ table: String, _ members: [Int]) throws -> [String] {
        try members.map { try self[$0].fingerprint(of: table) }
    }

    func conflictCount(_ members: [Int]) throws -> Int {
        try members.reduce(0) { $0 + (Int(try self[$1].scalar("SELECT count(*) FROM mmlite.conflicts") ?? "0") ?? 0) }
    }

    /// Events rows with keys in (from, to) on node `index`, as `id:payload`.
    func events(_ index: Int, from: Int64, to: Int64) throws -> [String] {
        try self[index].execute("SELECT id || ':' || payload FROM public.events WHERE id > \(from) AND id < \(to) ORDER BY id").rows.compactMap { $0[0] }
    }

    /// Server log errors the scenario causes on purpose, by kind: how many.
    func expectedLogErrorCounts() -> [String: Int] {
        mesh.logErrors().reduce(into: [:]) { counts, line in
            if let kind = Self.expectedLogErrors.first(where: { line.contains($0) }) { counts[kind, default: 0] += 1 }
        }
    }

    /// Server log errors, without those the scenario causes on purpose.
    func unexpectedLogErrors() -> [String] {
        mesh.logErrors().filter { line in
            !Self.expectedLogErrors.contains { line.contains($0) }
        }
    }

    static let expectedLogErrors = [
        // doctor's and apply's probe of the native apply trigger (CREATE FUNCTION ... LANGUAGE C, rolled back).
        "permission denied for language c",
        // part drops the parted node's subscriptions: their workers are stopped.
        "terminating logical replication worker due to administrator command",
    ]
}

@Suite("ManagedTests: the whole mesh lifecycle as a non-superuser, scram, without mmlite.so (PostgreSQL 16+)",
       .enabled(if: !managedInstallations.isEmpty), .serialized)
struct ManagedTests {
    @Test("doctor, apply (3 nodes), conflicting writes converge, join a 4th node while all write, part, status, conflicts list, ddl", arguments: managedInstallations)
    func lifecycle(_ original: PGInstallation) throws {
        let started = Date()
        let mesh = try ManagedMesh(4, installation: original)
        let members = [1, 2, 3]
        print("ManagedTests \(original.major): role set-up (docs/security.md), as run:\n\(try ManagedSetup.statements(password: "…").map { "[\($0.database)] \($0.sql)" }.joined(separator: "\n"))")
        for cluster in mesh.clusters {
            #expect(!cluster.installation.hasMMLitePlugin)
            #expect(try cluster.scalar("SELECT rolsuper::text FROM pg_roles WHERE rolname = '\(ManagedSetup.role)'") == "false")
        }
        // The superuser is not reachable over TCP (no password): only the Unix socket.
        #expect(throws: (any Error).self) { try PGConnection(mesh[1].tcpConninfo(database: "postgres", user: "postgres")) }
        #expect(try mesh.admin(mesh[1]).query("SELECT current_user || ':' || (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)").scalar == "app_admin:false")
        try mesh.writeConfig(members: members)

        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.code == 0 || doctor.code == 1, "doctor passes (warnings allowed)\n\(doctor)")
        #expect(!doctor.out.contains("FAIL"), "\(doctor)")
        print("ManagedTests \(original.major): doctor:\n\(doctor)")

        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        for index in members {
            #expect(try mesh.objects(index) == mesh.completeObjects(index, members: members))
            #expect(try mesh.applyTriggerFunction(index) == "mmlite.\"public.accounts$apply\"", "the SQL apply trigger (no mmlite.so)")
        }
        #expect(try mesh.objects(4) == [])
        #expect(mesh.mmlite(["apply"]).out.contains("Nothing to do"))
        // Sequences and time-ordered IDs, installed and used by app_admin (plpgsql, no mmlite.so).
        for index in members {
            let ids = try mesh.admin(mesh[index]).query("""
                SELECT (mmlite.time_ordered_id_parts(mmlite.time_ordered_id())).node_offset AS node_offset,
                       (SELECT increment_by FROM pg_sequences WHERE sequencename = 'events_id_seq') AS increment
                """).first
            #expect(ids?["node_offset"] == String(index) && ids?["increment"] == "64", "n\(index): \(String(describing: ids))")
        }
        let applyStatus = mesh.mmlite(["status", "--format", "json"])
        #expect(applyStatus.out.components(separatedBy: "\"conflict_apply\": \"sql\"").count == 4, "\(applyStatus)")

        // Conflicting writes from every member as app_admin, with live and with cut-off links.
        let conninfos = members.map { mesh.adminConninfo(mesh[$0]) }
        for seed in 1...2 {
            for paused in [false, true] {
                if paused { for index in members { try mesh.setReceiving(index, members: members, false) } }
                _ = try randomWorkload(conninfos: conninfos, table: "accounts", seed: UInt64(seed * 2 + (paused ? 1 : 0)), base: seed * 100, operations: 40)
                if paused { for index in members { try mesh.setReceiving(index, members: members, true) } }
            }
            #expect(mesh.quiesce(members), "seed \(seed): every link caught up")
            let prints = try mesh.fingerprints("public.accounts", members)
            #expect(Set(prints).count == 1, "seed \(seed): \(prints)\n\(divergenceReport(members.map { mesh[$0] }, table: "public.accounts"))")
        }
        let conflicts = try mesh.conflictCount(members)
        #expect(conflicts > 0, "the cut-off phases produced conflicts, logged in mmlite.conflicts")
        // Delta column: two nodes add to one balance with the links cut; both additions count.
        try mesh.admin(mesh[1]).execute("INSERT INTO public.accounts VALUES (7777, 'delta', 100)")
        #expect(mesh.quiesce(members))
        for index in members { try mesh.setReceiving(index, members: members, false) }
        try mesh.admin(mesh[1]).execute("UPDATE public.accounts SET balance = balance + 5 WHERE id = 7777")
        try mesh.admin(mesh[2]).execute("UPDATE public.accounts SET balance = balance + 7, owner = 'n2' WHERE id = 7777")
        for index in members { try mesh.setReceiving(index, members: members, true) }
        #expect(mesh.quiesce(members))
        for index in members {
            #expect(try mesh[index].scalar("SELECT balance FROM public.accounts WHERE id = 7777") == "112", "n\(index): both increments count")
        }

        // The plain table: each node its own keys.
        for index in members {
            try mesh.admin(mesh[index]).execute("INSERT INTO public.events SELECT \(index) * 1000 + g, 'from n\(index)', 0 FROM generate_series(1, 10) g")
        }
        #expect(waitUntil(timeout: 30) { try members.allSatisfy { try mesh[$0].scalar("SELECT count(*) FROM public.events") == "30" } })

        // join n4 from n1 while every member writes (as app_admin).
        let writers = try members.map {
            try Writer(cluster: mesh[$0], base: Int64($0) * 10_000_000, table: "public.events", column: "payload",
                       conninfo: mesh.adminConninfo(mesh[$0]))
        }
        defer { writers.forEach { if !$0.stopped { $0.stop() } } }
        func letWritersRun(more: Int) {
            let marks = writers.map(\.count)
            _ = waitUntil(timeout: 60) { zip(writers, marks).allSatisfy { $0.count >= $1 + more } }
        }
        letWritersRun(more: 100)
        let all = [1, 2, 3, 4]
        try mesh.writeConfig(members: all)
        // The password (in every peer_dsn, so in the subscriptions) shows in no process's argv meanwhile.
        let sampler = ProcessSampler(secret: mesh.password)
        sampler.start()
        defer { sampler.stop() }
        let join = mesh.mmlite(["join", "n4", "--from", "n1"])
        #expect(join.code == 0, "\(join)")
        #expect(join.out.contains("Done: n4 joined mesh \"shop\""), "\(join)")
        #expect(try mesh.admin(mesh[4]).query("SELECT mmlite.node_offset() AS node_offset").first?["node_offset"] == "4")
        letWritersRun(more: 100)
        writers.forEach { $0.stop() }
        for writer in writers { #expect(writer.failure == nil, "\(writer.failure ?? "")") }
        #expect(mesh.quiesce(all), "every link caught up after join")
        for (offset, writer) in writers.enumerated() {
            let base = Int64(offset + 1) * 10_000_000
            for index in all {
                #expect(try mesh.events(index, from: base, to: base + 10_000_000) == writer.expectedRows,
                        "n\(index) holds exactly what writer \(offset + 1) committed")
            }
        }
        #expect(Set(try mesh.fingerprints("public.events", all)).count == 1)
        #expect(Set(try mesh.fingerprints("public.accounts", all)).count == 1, "n4 got accounts from n1")
        for index in all { #expect(try mesh.objects(index) == mesh.completeObjects(index, members: all)) }
        #expect(try mesh.applyTriggerFunction(4) == "mmlite.\"public.accounts$apply\"")

        // n4 takes part in conflict resolution like the others.
        for index in all { try mesh.setReceiving(index, members: all, false) }
        _ = try randomWorkload(conninfos: all.map { mesh.adminConninfo(mesh[$0]) }, table: "accounts", seed: 99, base: 1000, operations: 30)
        for index in all { try mesh.setReceiving(index, members: all, true) }
        #expect(mesh.quiesce(all))
        let prints = try mesh.fingerprints("public.accounts", all)
        #expect(Set(prints).count == 1, "\(prints)\n\(divergenceReport(all.map { mesh[$0] }, table: "public.accounts"))")
        #expect(try mesh.conflictCount(all) > conflicts)

        // part n2.
        let part = mesh.mmlite(["part", "n2"])
        #expect(part.code == 0, "\(part)")
        #expect(part.out.contains("Done: n2 is no longer part of mesh \"shop\""), "\(part)")
        sampler.stop()
        #expect(sampler.leaks.isEmpty, "\(sampler.leaks)")
        #expect(!(join.all + part.all).contains(mesh.password))
        show(join, part)
        let remaining = [1, 3, 4]
        for index in remaining { #expect(try mesh.objects(index) == mesh.completeObjects(index, members: remaining)) }
        #expect(try TestMesh.objects(mesh[2]) == [])
        try mesh.writeConfig(members: remaining)
        try mesh.admin(mesh[4]).execute("INSERT INTO public.events VALUES (4000001, 'after part', 0)")
        #expect(waitUntil(timeout: 30) { try remaining.allSatisfy { try mesh[$0].scalar("SELECT payload FROM public.events WHERE id = 4000001") == "after part" } })
        #expect(try mesh[2].scalar("SELECT count(*) FROM public.events WHERE id = 4000001") == "0")

        var status = mesh.mmlite(["status", "--check"])
        _ = waitUntil(timeout: 30) { status = mesh.mmlite(["status", "--check"]); return status.code == 0 }
        #expect(status.code == 0, "\(status)")
        let list = mesh.mmlite(["conflicts", "list"])
        #expect(list.code == 0, "\(list)")
        #expect(list.out.contains("public.accounts"), "\(list)")

        // diff and repair as app_admin: a row changed on n3 only (by the superuser, under an origin).
        let same = mesh.mmlite(["diff"])
        #expect(same.code == 0, "\(same)")
        try mesh[3].writeLocally("UPDATE public.accounts SET owner = 'diverged' WHERE id = 7777")
        let found = mesh.mmlite(["diff", "--table", "public.accounts", "--format", "json"])
        #expect(found.code == 1 && diffJSON(found).keys == ["public.accounts:7777"], "\(found)")
        let repaired = mesh.mmlite(["repair", "--table", "public.accounts", "--from", "n1"])
        #expect(repaired.code == 0 && repaired.out.contains("n3: 1 change made"), "\(repaired)")
        let after = mesh.mmlite(["diff"])
        #expect(after.code == 0, "\(after)")

        // mmlite ddl as app_admin: a column on both tables, on every member at once.
        let ddl = mesh.mmlite(["ddl", "ALTER TABLE public.accounts ADD COLUMN note text; ALTER TABLE public.events ADD COLUMN note text"])
        #expect(ddl.code == 0, "\(ddl)")
        try mesh.admin(mesh[3]).execute("""
            UPDATE public.accounts SET note = 'via n3' WHERE id = (SELECT min(id) FROM public.accounts);
            INSERT INTO public.events (id, payload, kind, note) VALUES (4000002, 'after ddl', 0, 'note from n3')
            """)
        #expect(waitUntil(timeout: 30) { try remaining.allSatisfy { index in
            try mesh[index].scalar("SELECT (SELECT note FROM public.events WHERE id = 4000002) || '/' || (SELECT note FROM public.accounts ORDER BY id LIMIT 1)") == "note from n3/via n3"
        } }, "values written to the new columns reach every member")
        #expect(mesh.mmlite(["status", "--check"]).code == 0)

        let errors = mesh.unexpectedLogErrors()
        #expect(errors.isEmpty, "\(errors)")
        print("ManagedTests \(original.major): expected server log errors: \(mesh.expectedLogErrorCounts())")
        print(String(format: "ManagedTests %d: lifecycle in %.1f s", original.major, Date().timeIntervalSince(started)))
    }

    @Test("the installation copy: pg_config answers with the copy's paths, no mmlite files in it, the original keeps its own", arguments: managedInstallations)
    func installationCopy(_ original: PGInstallation) throws {
        let hadPlugin = original.hasMMLitePlugin
        let copy = try original.withoutMMLite()
        #expect(try original.withoutMMLite().pgConfig == copy.pgConfig, "one copy per installation and process")
        #expect(copy.major == original.major && copy.version == original.version)
        #expect(copy.root != original.root && copy.root.hasPrefix("/tmp/"))
        for path in [copy.bindir, copy.pkglibdir, copy.sharedir] { #expect(path.hasPrefix(copy.root + "/"), "\(path)") }
        #expect(!copy.hasMMLitePlugin)
        let extensionFiles = try FileManager.default.contentsOfDirectory(atPath: copy.sharedir + "/extension").filter { $0.hasPrefix("mmlite") }
        #expect(extensionFiles.isEmpty, "\(extensionFiles)")
        #expect(original.hasMMLitePlugin == hadPlugin, "the original is untouched")
        // The copy's programs run (their libraries came along).
        #expect(try spawnAndWait([copy.binary("postgres"), "--version"]).0 == 0)
        // Debian's packages are spread over /usr/lib and /usr/share: not copyable.
        if let debian = try? PGInstallation(pgConfig: "/usr/lib/postgresql/15/bin/pg_config") {
            #expect(!debian.isSelfContained)
            #expect(throws: HarnessError.self) { try debian.withoutMMLite() }
        }
    }

    @Test("docs/security.md quotes the role set-up exactly as these tests run it")
    func docsQuoteTheSetup() throws {
        let text = try String(contentsOf: repositoryFile("docs/security.md"), encoding: .utf8)
        #expect(text.contains(ManagedSetup.documented), "docs/security.md lacks, verbatim:\n\(ManagedSetup.documented)")
    }

    @Suite("ManagedTests: one documented right missing: doctor names the statement, apply/join change nothing", .serialized)
    struct MissingGrant {
        /// Two nodes; for a right only join needs, n1 is a one-node mesh (built
        /// with every right) that n2 is to join, and the right is then revoked on both.
        func prepare(_ original: PGInstallation, without grant: ManagedSetup.Grant?) throws -> ManagedMesh {
            let forJoin = grant?.forJoin ?? true
            let mesh = try ManagedMesh(2, installation: original, without: forJoin ? nil : grant)
            if forJoin {
                try mesh.writeConfig(members: [1])
                let apply = mesh.mmlite(["apply"])
                guard apply.code == 0 else { throw HarnessError("apply of the one-node mesh failed: \(apply)") }
                #expect(try mesh.objects(1) == mesh.completeObjects(1, members: [1]))
                let revoke = try grant.map(ManagedSetup.revoke)
                if let revoke { for cluster in mesh.clusters { try cluster.execute(revoke.sql, database: revoke.database) } }
            }
            try mesh.writeConfig(members: [1, 2])
            return mesh
        }

        @Test("doctor fails naming the GRANT/ALTER to run; apply (or join) exits non-zero; every node unchanged",
              arguments: managedInstallations, ManagedSetup.Grant.allCases)
        func missing(_ original: PGInstallation, _ grant: ManagedSetup.Grant) throws {
            let started = Date()
            let mesh = try prepare(original, without: grant)
            let before = try [1, 2].map { try mesh.objects($0) }

            let doctor = mesh.mmlite(["doctor"])
            #expect(doctor.code == 2, "doctor fails\n\(doctor)")
            #expect(grant.isNamed(in: doctor.all), "doctor names \(grant.fix.joined(separator: " … "))\n\(doctor)")

            let command = grant.forJoin ? ["join", "n2", "--from", "n1"] : ["apply"]
            let run = mesh.mmlite(command)
            #expect(run.code != 0, "\(run)")
            let after = try [1, 2].map { try mesh.objects($0) }
            #expect(after == before, "every node unchanged: before \(before), after \(after)\n\(run)")
            if !grant.forJoin { #expect(before == [[], []]) }
            print("ManagedTests \(original.major) without \(grant.rawValue) (\(String(format: "%.1f", Date().timeIntervalSince(started))) s):\n--- doctor: \(doctor)\n--- \(command.joined(separator: " ")): \(run)")
        }

        @Test("control: with every documented right, doctor before join passes and join works", arguments: managedInstallations)
        func joinWithEveryRight(_ original: PGInstallation) throws {
            let mesh = try prepare(original, without: nil)
            try mesh.admin(mesh[1]).execute("INSERT INTO public.accounts VALUES (1, 'n1', 1); INSERT INTO public.events VALUES (1, 'n1', 0)")
            let doctor = mesh.mmlite(["doctor"])
            #expect(doctor.code == 0 || doctor.code == 1, "doctor passes (warnings allowed)\n\(doctor)")
            #expect(!doctor.out.contains("FAIL"), "\(doctor)")
            let join = mesh.mmlite(["join", "n2", "--from", "n1"])
            #expect(join.code == 0, "\(join)")
            for index in [1, 2] { #expect(try mesh.objects(index) == mesh.completeObjects(index, members: [1, 2])) }
            try mesh.admin(mesh[2]).execute("INSERT INTO public.events VALUES (2, 'n2', 0)")
            #expect(waitUntil(timeout: 30) { try mesh[1].scalar("SELECT count(*) FROM public.events") == "2" })
            #expect(try mesh[2].scalar("SELECT owner FROM public.accounts WHERE id = 1") == "n1")
            // doctor's reach probe from n2 before it joined: n1's publication lists mmlite's change
            // table, which n2 has only once join installed it (doctor counts that as reached).
            let errors = mesh.unexpectedLogErrors().filter { !$0.contains("schema \"mmlite\" does not exist") }
            #expect(errors.isEmpty, "\(errors)")
        }
    }
}
