import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

extension TestMesh {
    /// Writes mmlite.toml with only the clusters `members` (1-based) as nodes.
    func writeConfig(members: [Int], mesh: String = "shop") throws {
        var text = """
        [mesh]
        name = "\(mesh)"
        tables = ["public.users", "public.departments"]

        """
        for index in members {
            text += "\n[[nodes]]\nname = \"\(self[index].name)\"\ndsn = \"\(self[index].conninfo)\"\n"
        }
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Waits until `users` and `departments` have the same content on the nodes `indices`.
    func converged(_ indices: [Int], timeout: Double = 60) -> Bool {
        waitUntil(timeout: timeout, interval: 0.2) {
            let prints = try indices.map { try self[$0].fingerprint(of: "public.users") + self[$0].fingerprint(of: "public.departments") }
            return Set(prints).count == 1
        }
    }
}

/// Inserts, updates and deletes rows with its own keys on one node until stopped,
/// and keeps what the table must hold for those keys.
final class Writer: @unchecked Sendable {
    let lock = NSLock()
    private var stopFlag = false
    private(set) var committed = 0
    private(set) var model: [Int64: String] = [:]
    /// Every committed change in order: (key, value after it; nil = deleted).
    private(set) var history: [(Int64, String?)] = []
    private(set) var failure: String?
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    /// Writes `table` (columns: a bigint key, `column` text, an int) over
    /// `conninfo` (default: the cluster's superuser connection).
    init(cluster: Cluster, base: Int64, table: String = "public.users", column: String = "name", conninfo: String? = nil) throws {
        let box = Unchecked(try conninfo.map { try PGConnection($0) } ?? cluster.connect())
        thread = Thread { [self] in
            let connection = box.value
            var next = base
            var live: [Int64] = []
            var generator = SystemRandomNumberGenerator()
            while !stopped {
                do {
                    let choice = Int.random(in: 0..<10, using: &generator)
                    if choice < 5 || live.count < 5 {
                        next += 1
                        try connection.execute("INSERT INTO \(table) VALUES (\(next), 'v0', \(next % 7))")
                        record { $0[next] = "v0" }
                        live.append(next)
                    } else if choice < 8 {
                        let id = live.randomElement(using: &generator)!
                        let value = "v\(Int.random(in: 1..<1000, using: &generator))"
                        try connection.execute("UPDATE \(table) SET \(column) = '\(value)' WHERE id = \(id)")
                        record { $0[id] = value }
                    } else {
                        let index = Int.random(in: 0..<live.count, using: &generator)
                        let id = live.remove(at: index)
                        try connection.execute("DELETE FROM \(table) WHERE id = \(id)")
                        record { $0[id] = nil }
                    }
                } catch {
                    lock.lock(); failure = "\(error)"; lock.unlock()
                    break
                }
                usleep(1000)
            }
            connection.close()
            done.signal()
        }
        thread?.start()
    }

    private func record(_ change: (inout [Int64: String]) -> Void) {
        lock.lock()
        let before = model
        change(&model)
        for key in Set(before.keys).union(model.keys) where before[key] != model[key] { history.append((key, model[key])) }
        committed += 1
        lock.unlock()
    }

    /// Whether `rows` (this writer's keys on some node, `id:name`) are exactly
    /// what this writer had committed after some change at or past `mark`
    /// (a count of `history`): nothing committed before `mark` is missing, and
    /// what came later arrived in order or not at all.
    func isPrefix(_ rows: [String], from mark: Int) -> Bool {
        lock.lock(); defer { lock.unlock() }
        var observed: [Int64: String] = [:]
        for row in rows {
            let parts = row.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let id = Int64(parts[0]) else { return false }
            observed[id] = String(parts[1])
        }
        var state: [Int64: String] = [:]
        for (key, value) in history[..<mark] { state[key] = value }
        var mismatched = Set(Set(state.keys).union(observed.keys).filter { state[$0] != observed[$0] })
        if mismatched.isEmpty { return true }
        for (key, value) in history[mark...] {
            state[key] = value
            if state[key] == observed[key] { mismatched.remove(key) } else { mismatched.insert(key) }
            if mismatched.isEmpty { return true }
        }
        return false
    }

    var changes: Int { lock.lock(); defer { lock.unlock() }; return history.count }

    var stopped: Bool { lock.lock(); defer { lock.unlock() }; return stopFlag }
    var count: Int { lock.lock(); defer { lock.unlock() }; return committed }

    func stop() {
        lock.lock(); stopFlag = true; lock.unlock()
        done.wait()
    }

    /// Rows of this writer as `id:name`, sorted.
    var expectedRows: [String] {
        lock.lock(); defer { lock.unlock() }
        return model.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }
    }
}

/// MMLITE_TEST_SHOW=1 prints the commands' output (for docs/operations.md).
func show(_ runs: Run...) {
    if ProcessInfo.processInfo.environment["MMLITE_TEST_SHOW"] != nil { for run in runs { print(run.all) } }
}

@Suite("mmlite join and part against real clusters", .enabled(if: installation != nil), .serialized)
struct CLIJoinTests {
    /// Waits until every writer committed `more` transactions past what it had.
    func letWritersRun(_ writers: [Writer], more: Int) {
        let marks = writers.map(\.count)
        _ = waitUntil(timeout: 60) { zip(writers, marks).allSatisfy { $0.count >= $1 + more } }
    }

    func rows(_ cluster: Cluster, from: Int64, to: Int64) throws -> [String] {
        try cluster.execute("SELECT id || ':' || name FROM public.users WHERE id > \(from) AND id < \(to) ORDER BY id").rows.compactMap { $0[0] }
    }

    @Test("join a node from one member while every member writes: every node ends identical, no change lost or doubled (2→3 and 3→4, 3 times each)",
          arguments: [3, 2], 1...3)
    func joinUnderLoad(members count: Int, repetition: Int) throws {
        let mesh = try TestMesh(count + 1)
        let all = Array(1...count + 1), members = Array(1...count), new = count + 1
        try mesh.writeConfig(members: members)
        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        try mesh[1].execute("INSERT INTO public.departments SELECT g, 'd' || g FROM generate_series(1, 50) g")
        let writers = try members.map { try Writer(cluster: mesh[$0], base: Int64($0) * 10_000_000) }
        let writing = Date()
        defer { writers.forEach { if !$0.stopped { $0.stop() } } }
        letWritersRun(writers, more: 100)

        try mesh.writeConfig(members: all)
        let join = mesh.mmlite(["join", "n\(new)", "--from", "n1"])
        #expect(join.code == 0, "\(join)")
        show(join)
        #expect(join.out.contains("paused for"), "\(join)")
        #expect(join.out.contains("public.users:"), "\(join)")
        #expect(join.out.contains("Done: n\(new) joined mesh \"shop\""), "\(join)")
        letWritersRun(writers, more: 100)
        writers.forEach { $0.stop() }
        let total = writers.map(\.count).reduce(0, +), seconds = Date().timeIntervalSince(writing)
        print(String(format: "join %d→%d #%d: writers committed %d transactions in %.1f s (%.0f/s in total) around the join",
                     count, count + 1, repetition, total, seconds, Double(total) / seconds))
        for writer in writers { #expect(writer.failure == nil, "\(writer.failure ?? "")") }

        #expect(mesh.converged(all), "all nodes hold the same rows")
        for (offset, writer) in writers.enumerated() {
            let base = Int64(offset + 1) * 10_000_000
            for index in all {
                #expect(try rows(mesh[index], from: base, to: base + 10_000_000) == writer.expectedRows,
                        "n\(index) holds exactly what writer \(offset + 1) committed")
            }
        }
        for index in all { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }
        // The new node's own writes reach everyone.
        try mesh.expectReplicates(base: 1)
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
        let again = mesh.mmlite(["join", "n\(new)", "--from", "n1"])
        #expect(again.code == 0, "\(again)")
        #expect(mesh.mmlite(["apply"]).out.contains("Nothing to do"))
    }

    @Test("join --dry-run changes nothing; apply leaves a node that has not joined out; an interrupted join re-runs to completion")
    func dryRunAndInterrupted() throws {
        let mesh = try TestMesh(3)
        try mesh.writeConfig(members: [1, 2])
        try #require(mesh.mmlite(["apply"]).code == 0)
        try mesh[1].execute("INSERT INTO public.users SELECT g, 'one', NULL FROM generate_series(1, 500) g")
        try mesh[2].execute("INSERT INTO public.users SELECT g, 'two', NULL FROM generate_series(1001, 1500) g")
        #expect(mesh.converged([1, 2]))

        try mesh.writeConfig(members: [1, 2, 3])
        let before = try (1...3).map { try mesh.objects($0) }
        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 0, "\(apply)")
        #expect(apply.out.contains("Nothing to do"), "\(apply)")
        #expect(apply.out.contains("note: n3 has not joined the mesh"), "\(apply)")
        #expect(apply.out.contains("mmlite join n3 --from n1"), "\(apply)")
        let pendingStatus = mesh.mmlite(["status", "--check"])
        #expect(pendingStatus.code == 1, "a node that has not joined is a warning, not critical\n\(pendingStatus)")
        #expect(pendingStatus.out.contains("n3 has not joined the mesh (no publication mmlite_shop on it): mmlite join n3 --from n1"), "\(pendingStatus)")

        let fromItself = mesh.mmlite(["join", "n3", "--from", "n3"])
        #expect(fromItself.code == 64, "\(fromItself)")
        let fromPending = mesh.mmlite(["join", "n1", "--from", "n3"])
        #expect(fromPending.code == 2, "\(fromPending)")
        #expect(fromPending.err.contains("n3 is not a member of mesh \"shop\" (members: n1, n2)"), "\(fromPending)")
        let dry = mesh.mmlite(["join", "n3", "--from", "n1", "--dry-run"])
        #expect(dry.code == 0, "\(dry)")
        show(dry)
        // The default filter: the mmlite plugin before 16, pgoutput with origin = none from 16 on.
        let originNone = ServerCapabilities(major: mesh[1].installation.major).originNone
        let plugin = originNone ? "pgoutput" : "mmlite"
        #expect(dry.out.contains("-- on n2:\nSELECT lsn::text FROM pg_create_logical_replication_slot('mmlite_shop_n3', '\(plugin)');"), "\(dry)")
        let exporting = JoinSQL.createSlotExportingSnapshot(slot: "mmlite_shop_n3", plugin: plugin, major: mesh[1].installation.major)
        #expect(dry.out.contains(exporting + ";"), "\(dry)")
        if mesh[1].installation.major == 15 { #expect(exporting == "CREATE_REPLICATION_SLOT mmlite_shop_n3 LOGICAL mmlite (SNAPSHOT 'export')") }
        #expect(dry.out.contains("ALTER SUBSCRIPTION mmlite_shop_from_n2 DISABLE;"), "\(dry)")
        #expect(dry.out.contains("SELECT pg_replication_slot_advance('mmlite_shop_n3', 'R_n2');"), "\(dry)")
        #expect(dry.out.contains("CREATE SUBSCRIPTION mmlite_shop_from_n1 CONNECTION '\(mesh[1].conninfo)' PUBLICATION mmlite_shop WITH (create_slot = false, slot_name = 'mmlite_shop_n3', copy_data = false\(originNone ? ", origin = none" : ""));"), "\(dry)")
        #expect(try (1...3).map { try mesh.objects($0) } == before, "dry run changed nothing")

        // First attempt: n3 goes down after the snapshot was exported (the copy fails).
        let n3 = Unchecked(mesh[3])
        let n2 = Unchecked(mesh[2])
        let first = mesh.mmlite(["join", "n3", "--from", "n1"], hooks: Hooks(afterPhase: { phase, _ in
            if phase == 3 { try? n3.value.stop(mode: .immediate) }
        }))
        #expect(first.code == 75, "\(first)")
        #expect(first.err.contains("run `mmlite join n3 --from n1` again"), "\(first)")
        #expect(try mesh[1].scalar("SELECT count(*) FROM pg_subscription WHERE subenabled") == "1", "n1's subscriptions were resumed")
        try mesh[3].start()
        #expect(try mesh[3].scalar("SELECT count(*) FROM public.users") == "0", "the failed copy left nothing")
        try mesh[2].execute("INSERT INTO public.users SELECT g, 'two', NULL FROM generate_series(1501, 1600) g")

        // Second attempt: stopped after the copy committed (before the wiring); n2 writes meanwhile.
        let second = mesh.mmlite(["join", "n3", "--from", "n1"], hooks: Hooks(afterPhase: { phase, _ in
            if phase == 5 {
                _ = try? n2.value.execute("INSERT INTO public.users SELECT g, 'two', NULL FROM generate_series(1601, 1700) g")
                try? n3.value.stop(mode: .immediate)
            }
        }))
        #expect(second.code == 75, "\(second)")
        #expect(second.out.contains("dropped n1's slot mmlite_shop_n3 left by an interrupted join"), "\(second)")
        #expect(second.out.contains("n2: slot mmlite_shop_n3 exists (from an earlier attempt)"), "\(second)")
        try mesh[3].start()
        try mesh[1].execute("INSERT INTO public.users SELECT g, 'one', NULL FROM generate_series(501, 600) g")

        let third = mesh.mmlite(["join", "n3", "--from", "n1"])
        #expect(third.code == 0, "\(third)")
        #expect(third.out.contains("Resuming join of n3"), "\(third)")
        #expect(mesh.converged([1, 2, 3]))
        #expect(try mesh[3].scalar("SELECT count(*) FROM public.users") == "1300")
        #expect(try mesh[3].scalar("SELECT count(*) FROM pg_replication_origin WHERE roname = 'mmlite_shop_copy'") == "0")
        for index in 1...3 { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }
        try mesh.expectReplicates(base: 5000)
        #expect(mesh.logErrors().filter { !$0.contains("terminating connection") && !$0.contains("could not receive data") && !$0.contains("could not connect") && !$0.contains("the database system is") }.isEmpty,
                "\(mesh.logErrors())")
    }

    @Test("part of a live node keeps its changes and removes it everywhere; it joins again; status warns about a dead node's slot; part --force removes it")
    func partAndRejoin() throws {
        let mesh = try TestMesh(3)
        try mesh.writeConfig(members: [1, 2, 3])
        try #require(mesh.mmlite(["apply"]).code == 0)
        let writers = try (1...3).map { try Writer(cluster: mesh[$0], base: Int64($0) * 10_000_000) }
        defer { writers.forEach { if !$0.stopped { $0.stop() } } }
        letWritersRun(writers, more: 200)

        // Every node writes throughout part. What n3 committed before part
        // started must be on n1 and n2; what it committed later may be or not
        // (in order); n1's and n2's own writes keep flowing between them.
        let mark = writers[2].changes
        let part = mesh.mmlite(["part", "n3"])
        #expect(part.code == 0, "\(part)")
        show(part)
        #expect(part.out.contains("Done: n3 is no longer part of mesh \"shop\""), "\(part)")
        letWritersRun(writers, more: 100)
        writers.forEach { $0.stop() }
        for writer in writers { #expect(writer.failure == nil, "\(writer.failure ?? "")") }
        #expect(writers[2].changes > mark + 50, "n3 kept writing during and after part")
        #expect(mesh.converged([1, 2]))
        for index in 1...2 {
            let received = try rows(mesh[index], from: 30_000_000, to: 40_000_000)
            #expect(writers[2].isPrefix(received, from: mark), "n\(index) has every change n3 committed before part started, in order")
            #expect(received != writers[2].expectedRows, "n3's writes after part do not reach n\(index)")
            for writer in 0...1 {
                let base = Int64(writer + 1) * 10_000_000
                #expect(try rows(mesh[index], from: base, to: base + 10_000_000) == writers[writer].expectedRows)
            }
        }
        #expect(try mesh.objects(1) == ["publication:mmlite_shop", "slot:mmlite_shop_n2", "subscription:mmlite_shop_from_n2"])
        #expect(try mesh.objects(2) == ["publication:mmlite_shop", "slot:mmlite_shop_n1", "subscription:mmlite_shop_from_n1"])
        #expect(try mesh.objects(3) == [])
        try mesh[1].execute("INSERT INTO public.users VALUES (7001, 'after part', NULL)")
        #expect(waitUntil(timeout: 30) { try mesh[2].scalar("SELECT name FROM public.users WHERE id = 7001") == "after part" })
        #expect(try mesh[3].scalar("SELECT count(*) FROM public.users WHERE id = 7001") == "0")

        // Join again: its tables are not empty, so --force (it empties them).
        let refused = mesh.mmlite(["join", "n3", "--from", "n2"])
        #expect(refused.code == 2, "\(refused)")
        #expect(refused.err.contains("already has rows"), "\(refused)")
        let rejoin = mesh.mmlite(["join", "n3", "--from", "n2", "--force"])
        #expect(rejoin.code == 0, "\(rejoin)")
        #expect(mesh.converged([1, 2, 3]))
        for index in 1...3 { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }
        try mesh.expectReplicates(base: 8000)

        // n2 dies: status names part --force; part without --force refuses.
        try mesh[2].stop(mode: .immediate)
        let status = mesh.mmlite(["status", "--warning-retained-bytes", "1"])
        #expect(status.out.contains("retains"), "\(status)")
        #expect(status.out.contains("mmlite part n2 --force"), "\(status)")
        let refusedPart = mesh.mmlite(["part", "n2"])
        #expect(refusedPart.code == 69, "\(refusedPart)")
        #expect(refusedPart.err.contains("mmlite part n2 --force"), "\(refusedPart)")
        let forced = mesh.mmlite(["part", "n2", "--force"])
        #expect(forced.code == 0, "\(forced)")
        show(forced, status)
        #expect(forced.out.contains("n1: up to n2's WAL position"), "\(forced)")
        #expect(forced.out.contains("may never have left it"), "\(forced)")
        #expect(try mesh.objects(1) == ["publication:mmlite_shop", "slot:mmlite_shop_n3", "subscription:mmlite_shop_from_n3"])
        #expect(try mesh.objects(3) == ["publication:mmlite_shop", "slot:mmlite_shop_n1", "subscription:mmlite_shop_from_n1"])
        try mesh[3].execute("INSERT INTO public.users VALUES (9001, 'still meshed', NULL)")
        #expect(waitUntil(timeout: 30) { try mesh[1].scalar("SELECT name FROM public.users WHERE id = 9001") == "still meshed" })
    }

    @Test("a change the source applied between the peer's slot and the snapshot: the naive procedure applies it twice, join does not")
    func naiveVersusExact() throws {
        // Naive: peer slot, then the snapshot, no wait/pause/advance.
        let naive = try TestMesh(3)
        try naive.writeConfig(members: [1, 2])
        try #require(naive.mmlite(["apply"]).code == 0)
        try naive[2].execute("SELECT pg_create_logical_replication_slot('mmlite_shop_n3', 'mmlite')")
        try naive[2].execute("INSERT INTO public.users VALUES (42, 'from n2', NULL)")
        #expect(waitUntil(timeout: 30) { try naive[1].scalar("SELECT count(*) FROM public.users WHERE id = 42") == "1" })
        let replication = try naive[1].connect(overrides: ["replication": "database"])
        let slot = try replication.execute(JoinSQL.createSlotExportingSnapshot(slot: "mmlite_shop_n3", plugin: "mmlite", major: naive[1].installation.major))
        let reader = try naive[1].connect()
        try reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '\(slot.value(0, "snapshot_name") ?? "")'")
        let writer = try naive[3].connect()
        try reader.copy("COPY public.users TO STDOUT (FORMAT binary)", to: writer, "COPY public.users FROM STDIN (FORMAT binary)")
        try reader.execute("COMMIT")
        replication.close()
        for publisher in [1, 2] {
            try naive[3].execute("CREATE SUBSCRIPTION mmlite_shop_from_n\(publisher) CONNECTION '\(naive[publisher].conninfo)' PUBLICATION mmlite_shop WITH (create_slot = false, slot_name = 'mmlite_shop_n3', copy_data = false)")
        }
        // 18 reports the same failure as a conflict (insert_exists on users_pkey).
        #expect(waitUntil(timeout: 30) { let log = naive[3].serverLog()
                    return log.contains("duplicate key value violates unique constraint \"users_pkey\"") || log.contains("conflict=insert_exists") },
                "the naive procedure applies n2's row a second time")

        // Exact: the same interleaving inside `mmlite join` (after the peer slots exist).
        let mesh = try TestMesh(3)
        try mesh.writeConfig(members: [1, 2])
        try #require(mesh.mmlite(["apply"]).code == 0)
        try mesh.writeConfig(members: [1, 2, 3])
        let n1 = Unchecked(mesh[1]), n2 = Unchecked(mesh[2])
        let join = mesh.mmlite(["join", "n3", "--from", "n1"], hooks: Hooks(afterPhase: { phase, _ in
            guard phase == 1 else { return }
            _ = try? n2.value.execute("INSERT INTO public.users VALUES (42, 'from n2', NULL)")
            _ = waitUntil(timeout: 30) { try n1.value.scalar("SELECT count(*) FROM public.users WHERE id = 42") == "1" }
        }))
        #expect(join.code == 0, "\(join)")
        #expect(join.out.contains("n2: advanced mmlite_shop_n3 from"), "\(join)")
        try mesh.expectReplicates(base: 100)
        #expect(mesh.converged([1, 2, 3]))
        #expect(try mesh[3].scalar("SELECT count(*) FROM public.users WHERE id = 42") == "1")
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }

    @Test("join --copy-schema into an empty database, of a million rows: per-table progress, same content")
    func largeCopy() throws {
        let mesh = try TestMesh(3, schema: [3: "SELECT 1"])
        // n1 and n2 hold the same rows (apply wires only identical tables); the test is about the copy from n2.
        for index in 1...2 { try mesh[index].execute("INSERT INTO public.users SELECT g, md5(g::text), g % 10 FROM generate_series(1, 1000000) g") }
        try mesh.writeConfig(members: [1, 2])
        try #require(mesh.mmlite(["apply"]).code == 0)
        try mesh.writeConfig(members: [1, 2, 3])
        let refused = mesh.mmlite(["join", "n3", "--from", "n2"])
        #expect(refused.code == 2, "\(refused)")
        #expect(refused.err.contains("table public.users does not exist on n3"), "\(refused)")
        // pg_dump must be at least the source's major: the installation's own, found on PATH
        // when no /usr/lib/postgresql/NN/bin has one that new (as for the PyPI builds of 16+).
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        setenv("PATH", (mesh[2].installation.binary("pg_dump") as NSString).deletingLastPathComponent + ":" + path, 1)
        defer { setenv("PATH", path, 1) }
        let join = mesh.mmlite(["join", "n3", "--from", "n2", "--copy-schema"])
        #expect(join.code == 0, "\(join)")
        show(join)
        #expect(join.out.contains("Created public.departments, public.users on n3 from n2's definitions"), "\(join)")
        #expect(join.out.contains("public.users: 1000000 rows"), "\(join)")
        let copySeconds = join.out.split(separator: "\n").first { $0.contains("public.users: 1000000 rows") }
            .flatMap { $0.components(separatedBy: " in ").last?.split(separator: " ").first }.flatMap { Double($0) } ?? 0
        if copySeconds >= 1.5 {
            #expect(join.out.contains(" of ~") && join.out.contains("/s, ETA "), "a copy of \(copySeconds) s prints progress lines")
        }
        #expect(try mesh[3].fingerprint(of: "public.users") == mesh[2].fingerprint(of: "public.users"))
        try mesh.expectReplicates(base: 2_000_000)
        // The refused first attempt's reachability probes (a subscription needs its tables) logged errors on n3.
        let errors = mesh.logErrors().filter { !$0.contains("relation \"public.departments\" does not exist") }
        #expect(errors.isEmpty, "\(errors)")
    }
}

@Suite("mmlite join killed and re-run; join of conflict-handled tables", .enabled(if: installation != nil), .serialized)
struct CLIJoinRecoveryTests {
    /// The `mmlite` program next to the test bundle (built by `swift build --build-tests`).
    var executable: String? { MMLiteProgram.path }

    func rows(_ cluster: Cluster, from: Int64, to: Int64) throws -> [String] {
        try cluster.execute("SELECT id || ':' || name FROM public.users WHERE id > \(from) AND id < \(to) ORDER BY id").rows.compactMap { $0[0] }
    }

    /// Starts `mmlite join` as a separate process and SIGKILLs it as soon as its output contains `marker`.
    func killJoin(_ mesh: TestMesh, when marker: String, after delay: Double = 0) throws -> String {
        let program = try #require(executable, "the mmlite program is built")
        let outputPath = mesh.harness.directory + "/join-\(UInt32.random(in: 0..<UInt32.max)).out"
        let child = try ChildProcess([program, "join", "n3", "--from", "n1", "-c", mesh.configPath], outputPath: outputPath)
        let seen = waitUntil(timeout: 120, interval: 0.02) { child.output.contains(marker) || child.poll() != nil }
        if delay > 0 { usleep(UInt32(delay * 1_000_000)) }
        let status = child.kill()
        let output = child.output
        #expect(seen && status == 128 + SIGKILL, "killed while running, at \(marker): exit \(status)\n\(output)")
        return output
    }

    @Test("join killed (SIGKILL) during the copy and again during the wiring, while every member writes; re-run completes with exact content")
    func killedAndRerun() throws {
        let mesh = try TestMesh(3)
        try mesh.writeConfig(members: [1, 2])
        try #require(mesh.mmlite(["apply"]).code == 0)
        // Enough rows that the copy takes a while (killed in the middle of it).
        try mesh[1].execute("INSERT INTO public.users SELECT g, md5(g::text), g % 10 FROM generate_series(1, 400000) g")
        try mesh[1].execute("INSERT INTO public.departments SELECT g, 'd' || g FROM generate_series(1, 50) g")
        #expect(mesh.converged([1, 2], timeout: 120))
        let writers = try [1, 2].map { try Writer(cluster: mesh[$0], base: Int64($0) * 10_000_000) }
        defer { writers.forEach { if !$0.stopped { $0.stop() } } }
        try mesh.writeConfig(members: [1, 2, 3])

        let first = try killJoin(mesh, when: "[5] copy", after: 0.3)
        #expect(!first.contains("the copy is committed"), "killed before the copy committed\n\(first)")
        #expect(try mesh[3].scalar("SELECT count(*) FROM public.users") == "0", "the killed copy left no rows")
        #expect(try mesh[1].scalar("SELECT count(*) FROM pg_subscription WHERE subenabled") == "1",
                "a SIGKILL during the copy does not leave n1's subscription paused (it was resumed before the copy)")

        let second = try killJoin(mesh, when: "[6] subscriptions of")
        #expect(second.contains("dropped n1's slot mmlite_shop_n3 left by an interrupted join"), "\(second)")
        #expect(second.contains("the copy is committed"), "\(second)")

        let third = mesh.mmlite(["join", "n3", "--from", "n1"])
        #expect(third.code == 0, "\(third)")
        #expect(third.out.contains("Resuming join of n3"), "\(third)")
        let marks = writers.map(\.count)
        _ = waitUntil(timeout: 60) { zip(writers, marks).allSatisfy { $0.count >= $1 + 100 } }
        writers.forEach { $0.stop() }
        for writer in writers { #expect(writer.failure == nil, "\(writer.failure ?? "")") }
        #expect(mesh.converged([1, 2, 3], timeout: 120))
        for (offset, writer) in writers.enumerated() {
            let base = Int64(offset + 1) * 10_000_000
            for index in 1...3 {
                #expect(try rows(mesh[index], from: base, to: base + 10_000_000) == writer.expectedRows,
                        "n\(index) holds exactly what writer \(offset + 1) committed")
            }
        }
        #expect(try mesh[3].scalar("SELECT count(*) FROM public.users WHERE id <= 400000") == "400000")
        #expect(try mesh[3].scalar("SELECT count(*) FROM pg_replication_origin WHERE roname = 'mmlite_shop_copy'") == "0")
        for index in 1...3 { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }
        try mesh.expectReplicates(base: 900_000)
        // The killed copy's connection ends with "unexpected EOF"/"connection to client lost" on n3: not an apply error.
        let errors = mesh.logErrors().filter { !$0.contains("unexpected EOF") && !$0.contains("connection to client lost") && !$0.contains("could not send data") && !$0.contains("protocol synchronization was lost") }
        #expect(errors.isEmpty, "\(errors)")
    }

    @Test("a one-node mesh (apply with one node) grows by join, with its rows copied, while it writes")
    func joinIntoOneNodeMesh() throws {
        let mesh = try TestMesh(2)
        try mesh.writeConfig(members: [1])
        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        try mesh[1].execute("INSERT INTO public.users SELECT g, 'n1', NULL FROM generate_series(1, 1000) g")
        let writer = try Writer(cluster: mesh[1], base: 10_000_000)
        defer { if !writer.stopped { writer.stop() } }
        _ = waitUntil(timeout: 60) { writer.count >= 100 }
        try mesh.writeConfig(members: [1, 2])
        let join = mesh.mmlite(["join", "n2", "--from", "n1"])
        #expect(join.code == 0, "\(join)")
        #expect(join.out.contains("Done: n2 joined mesh \"shop\""), "\(join)")
        let mark = writer.count
        _ = waitUntil(timeout: 60) { writer.count >= mark + 100 }
        writer.stop()
        #expect(writer.failure == nil, "\(writer.failure ?? "")")
        #expect(mesh.converged([1, 2]))
        #expect(try rows(mesh[2], from: 10_000_000, to: 20_000_000) == writer.expectedRows)
        #expect(try mesh[2].scalar("SELECT count(*) FROM public.users WHERE id <= 1000") == "1000")
        for index in 1...2 { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }
        try mesh.expectReplicates(base: 5000)
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }

    @Test("join into a mesh whose table opts in to last-update-wins, while members write: the new node gets rows and versions, and resolves conflicts like the others")
    func joinConflictHandledTable() throws {
        let mesh = try TestMesh(3)
        try mesh.writeConfig(members: [1, 2])
        try (try String(contentsOfFile: mesh.configPath, encoding: .utf8) + "\n[tables.\"public.users\"]\nconflicts = \"last-update-wins\"\n")
            .write(toFile: mesh.configPath, atomically: true, encoding: .utf8)
        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        try mesh[1].execute("INSERT INTO public.users SELECT g, 'n1', NULL FROM generate_series(1, 200) g")
        #expect(waitUntil(timeout: 30) { try mesh[2].scalar("SELECT count(*) FROM public.users") == "200" })
        try mesh[2].execute("DELETE FROM public.users WHERE id <= 20")   // tombstones the new node must know
        #expect(waitUntil(timeout: 30) { try mesh[1].scalar("SELECT count(*) FROM public.users") == "180" })
        let writers = try [1, 2].map { try Writer(cluster: mesh[$0], base: Int64($0) * 10_000_000) }
        defer { writers.forEach { if !$0.stopped { $0.stop() } } }
        _ = waitUntil(timeout: 60) { writers.allSatisfy { $0.count >= 100 } }

        var text = try String(contentsOfFile: mesh.configPath, encoding: .utf8)
        text += "\n[[nodes]]\nname = \"n3\"\ndsn = \"\(mesh[3].conninfo)\"\n"
        try text.write(toFile: mesh.configPath, atomically: true, encoding: .utf8)
        let join = mesh.mmlite(["join", "n3", "--from", "n1"])
        #expect(join.code == 0, "\(join)")
        #expect(join.out.contains("n3: install conflict handling"), "\(join)")
        #expect(join.out.contains("\"public.users$versions\": "), "the versions are copied\n\(join)")
        let marks = writers.map(\.count)
        _ = waitUntil(timeout: 60) { zip(writers, marks).allSatisfy { $0.count >= $1 + 100 } }
        writers.forEach { $0.stop() }
        for writer in writers { #expect(writer.failure == nil, "\(writer.failure ?? "")") }

        // The same keys from every node at once, and a late delete of a deleted key.
        for index in 1...3 { try mesh[index].execute("UPDATE public.users SET name = 'from n\(index)' WHERE id BETWEEN 21 AND 60") }
        try mesh[3].execute("INSERT INTO public.users VALUES (5, 'resurrected on n3', NULL)")
        #expect(mesh.converged([1, 2, 3], timeout: 90))
        for (offset, writer) in writers.enumerated() {
            let base = Int64(offset + 1) * 10_000_000
            for index in 1...3 { #expect(try rows(mesh[index], from: base, to: base + 10_000_000) == writer.expectedRows) }
        }
        let versions = "SELECT count(*) FROM mmlite.\"public.users$versions\""
        #expect(Set(try (1...3).map { try mesh[$0].scalar(versions) }).count == 1, "every node knows the same keys (tombstones included)")
        #expect(try mesh[3].scalar("SELECT count(*) FROM public.users WHERE id BETWEEN 21 AND 60 AND name LIKE 'from n_'") == "40")
        for index in 1...3 { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }
}
