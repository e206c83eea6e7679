import ClusterHarness
import Foundation
import MMLiteCore
import PostgresClient
import Testing

/// Native capture sends a change row as a change message only where every
/// decoder of the node turns it back into a row (docs/conflicts.md, "Change
/// messages"); anywhere else the message would be dropped and the nodes would
/// silently differ. These tests make the decoders that must not get one: a
/// walsender still running an mmlite.so from before change messages (as after
/// a package upgrade, until the walsenders restart), and a slot of another
/// plugin.
@Suite("change messages: only for decoders that take them", .enabled(if: !changeMessageInstallations.isEmpty), .serialized)
struct ChangeMessageTests {
    /// A walsender's plugin is looked up on `dynamic_library_path`, the
    /// triggers' functions in `$libdir`: a node with an old build first on
    /// the path decodes with it and captures with the current one.
    @Test("a walsender with an mmlite.so from before change messages gets change rows; once it runs the current build, messages; messages forged by a role with only LOGIN are skipped; a slot of another plugin gets rows again; a large transaction spilled and streamed",
          arguments: changeMessageInstallations)
    func decoders(_ pg: PGInstallation) throws {
        let work = NSTemporaryDirectory() + "mmlite-old-plugin-\(getpid())-\(pg.major)"
        let fileManager = FileManager.default
        try? fileManager.removeItem(atPath: work)
        try fileManager.createDirectory(atPath: work + "/lib", withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        defer { try? fileManager.removeItem(atPath: work) }
        try buildPlugin(pg, scratch: work + "/build", defines: ["MMLITE_WITHOUT_CHANGE_MESSAGE_DECODING"])
        try fileManager.copyItem(atPath: work + "/build/mmlite.so", toPath: work + "/lib/mmlite.so")
        try fileManager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: work + "/lib/mmlite.so")

        let mesh = try TestMesh(3, settings: [1: ["dynamic_library_path": "'\(work)/lib:$libdir'"]],
                                schema: [1: conflictSchema, 2: conflictSchema, 3: conflictSchema], installation: pg)
        try mesh.writeConflictConfig(policy: "last-update-wins", filter: .mmlite)
        let apply = mesh.mmlite(["apply"])
        try #require(apply.code == 0, "\(apply)")
        for index in 1...3 { #expect(try mesh.captureTriggerFunction(index) == "mmlite.capture_change") }
        #expect(waitUntil(timeout: 30) { try (1...3).allSatisfy { try mesh.activeDecoders($0) == 2 } }, "every link streams")
        #expect(waitUntil(timeout: 30) { try mesh.announcedDecoders(2) == 2 }, "n2's walsenders run the current build")
        #expect(try mesh.announcedDecoders(1) == 0, "n1's walsenders run the old build")

        try mesh[1].execute("INSERT INTO public.accounts VALUES (1, 'old decoder', 1)")
        #expect(try mesh.storedChanges(1) == 1, "n1 stores its change row: its decoders would drop a message")
        mesh.expectEverywhere("1:old decoder:1", where: "id = 1")
        try mesh[2].execute("INSERT INTO public.accounts VALUES (2, 'new decoder', 2)")
        #expect(try mesh.storedChanges(2) == 0, "n2 sends a change message")
        mesh.expectEverywhere("2:new decoder:2", where: "id = 2")

        // The upgrade completes: the file replaced as a package manager does, the walsenders restarted.
        try fileManager.copyItem(atPath: pg.pkglibdir + "/mmlite.so", toPath: work + "/lib/mmlite.so.new")
        try fileManager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: work + "/lib/mmlite.so.new")
        #expect(rename(work + "/lib/mmlite.so.new", work + "/lib/mmlite.so") == 0)
        try mesh[1].execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active_pid IS NOT NULL")
        #expect(waitUntil(timeout: 60) { try mesh.announcedDecoders(1) == 2 }, "n1's walsenders came back with the current build")
        try mesh[1].execute("UPDATE public.accounts SET owner = 'new decoder' WHERE id = 1")
        #expect(try mesh.storedChanges(1) == 1, "n1 sends a change message now")
        mesh.expectEverywhere("1:new decoder:1", where: "id = 1")

        // Forged change messages: any role may call pg_logical_emit_message(). The decoder takes a
        // message only right after the capture trigger's version row of the same key; these are
        // skipped with a WARNING, never applied, and replication goes on.
        try mesh[1].execute("CREATE ROLE intruder LOGIN")
        let intruder = try mesh[1].connect(overrides: ["user": "intruder"])
        defer { intruder.close() }
        let relid = UInt32(try mesh[1].scalar("SELECT 'mmlite.\"public.accounts$changes\"'::regclass::oid") ?? "") ?? 0
        let relidBytes = (0..<4).map { String(format: "%02x", (relid >> (8 * UInt32($0))) & 0xff) }.joined()
        let forged = "'\\x01000000\(relidBytes)" + String(repeating: "01", count: 40) + "'::bytea"
        try intruder.execute("SELECT pg_logical_emit_message(true, 'mmlite.change', \(forged))")
        try intruder.execute("SELECT pg_logical_emit_message(true, 'mmlite.change', '\\x02000000\(relidBytes)00'::bytea)")
        try intruder.execute("SELECT pg_logical_emit_message(false, 'mmlite.change', 'x')")
        // Right after a genuine change of the same transaction: still not the trigger's.
        try mesh[1].execute("BEGIN; UPDATE public.accounts SET balance = 60 WHERE id = 1; SELECT pg_logical_emit_message(true, 'mmlite.change', \(forged)); COMMIT")
        mesh.expectEverywhere("1:new decoder:60", where: "id = 1")
        #expect(waitUntil(timeout: 30) { mesh[1].serverLog().components(separatedBy: "skipped the change message").count - 1 >= 8 },
                "each walsender logs each of the 4 forged messages")

        // A slot of another plugin (pgoutput, as a table sync or an origin = none link uses) gets rows.
        // One session writes before, while and after: capture asks at every statement, not once per session.
        let writer = try mesh[2].connect()
        defer { writer.close() }
        try writer.execute("UPDATE public.accounts SET balance = 21 WHERE id = 2")
        #expect(try mesh.storedChanges(2) == 0, "n2 sends change messages")
        try mesh[2].execute("SELECT pg_create_logical_replication_slot('other_plugin', 'pgoutput')")
        try writer.execute("UPDATE public.accounts SET balance = 22 WHERE id = 2")
        #expect(try mesh.storedChanges(2) == 1, "n2 stores its change row while a pgoutput slot exists")
        mesh.expectEverywhere("2:new decoder:22", where: "id = 2")
        try mesh[2].execute("SELECT pg_drop_replication_slot('other_plugin')")
        try writer.execute("UPDATE public.accounts SET balance = 23 WHERE id = 2")
        #expect(try mesh.storedChanges(2) == 1, "and messages again once it is gone")
        mesh.expectEverywhere("2:new decoder:23", where: "id = 2")

        // A value stored out of line (TOAST) that the statement did not change: the new row holds a
        // pointer into the user table's TOAST, which the message must carry as the value itself.
        try mesh[1].execute("INSERT INTO public.accounts SELECT 50, string_agg(md5(g::text), '') || 'x', 50 FROM generate_series(1, 20000) g")
        try mesh[1].execute("UPDATE public.accounts SET balance = 51 WHERE id = 50")
        #expect(try mesh[1].scalar("SELECT pg_relation_size(reltoastrelid) > 0 FROM pg_class WHERE oid = 'public.accounts'::regclass") == "t", "stored out of line")
        #expect(try mesh.storedChanges(1) == 1, "sent as change messages")
        let toasted = "SELECT md5(owner) || ':' || balance FROM public.accounts WHERE id = 50"
        let expected = try mesh[1].scalar(toasted)
        #expect(waitUntil(timeout: 30) { try (2...3).allSatisfy { try mesh[$0].scalar(toasted) == expected } },
                "the unchanged out-of-line value arrives with the update: \((2...3).map { (try? mesh[$0].scalar(toasted)) ?? "?" })")

        // A transaction bigger than logical_decoding_work_mem: its messages spill to disk with its
        // other changes (to n3), or go out in progress (n2 subscribes with streaming = on).
        try mesh[1].execute("ALTER SYSTEM SET logical_decoding_work_mem = '64kB'")
        try mesh[1].execute("SELECT pg_reload_conf()")
        let streams = pg.major >= 14     // streaming of in-progress transactions and pg_stat_replication_slots: 14+
        if streams { try mesh[2].execute("ALTER SUBSCRIPTION mmlite_shop_from_n1 SET (streaming = on)") }
        // The changed subscription reconnects: until its new walsender has announced, capture would store rows.
        #expect(waitUntil(timeout: 60) {
            try mesh[1].scalar("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'mmlite_shop_from_n1' AND state = 'streaming'") == "2"
                && mesh.announcedDecoders(1) == 2
        })
        try mesh[1].execute("INSERT INTO public.accounts SELECT g, 'large', g FROM generate_series(100, 3099) g")
        #expect(try mesh.storedChanges(1) == 1, "sent as change messages")
        #expect(waitUntil(timeout: 60) {
            try (1...3).allSatisfy { try mesh[$0].scalar("SELECT count(*) FROM public.accounts WHERE owner = 'large'") == "3000" }
        }, "the large transaction arrives whole, spilled and streamed")
        if streams {
            #expect(waitUntil(timeout: 10) {
                // 18's subscriptions stream by default (streaming = parallel): n3's is streamed there.
                try mesh[1].scalar("SELECT spill_txns + stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 'mmlite_shop_n3'") == "t"
            }, "spilled (or streamed) to n3: \((try? mesh[1].execute("SELECT * FROM pg_stat_replication_slots").rows) ?? [])")
            #expect(waitUntil(timeout: 10) {
                try mesh[1].scalar("SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 'mmlite_shop_n2'") == "t"
            }, "streamed to n2")
        }
        #expect(try Set((1...3).map { try mesh[$0].fingerprint(of: "public.accounts") }).count == 1)
    }
}

/// Every installation: the decoder's tuple handling differs by major (13–16
/// and 17+), and the mesh uses mmlite slots (`filter = "mmlite"`) on all of them.
let changeMessageInstallations = everyInstallation

extension TestMesh {
    /// Node `index`'s mesh slots being decoded right now.
    func activeDecoders(_ index: Int) throws -> Int {
        Int(try self[index].scalar("SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'mmlite\\_shop\\_%' AND active") ?? "") ?? -1
    }

    /// Node `index`'s decoding processes that announced they take change
    /// messages: the session lock mmlite_change_message.c describes, held by
    /// a slot's active process (objid: format 1, "mmlt").
    func announcedDecoders(_ index: Int) throws -> Int {
        Int(try self[index].scalar("""
            SELECT count(*) FROM pg_locks l JOIN pg_replication_slots s ON s.active_pid = l.pid
            WHERE l.locktype = 'advisory' AND l.objsubid = 3 AND l.objid = 1835887732 AND l.classid::text = l.pid::text AND l.granted AND l.mode = 'ExclusiveLock'
            """) ?? "") ?? -1
    }
}

/// Builds mmlite.so for `pg` with extra C defines into `scratch` (the
/// repository's Makefile, its own scratch folder).
func buildPlugin(_ pg: PGInstallation, scratch: String, defines: [String]) throws {
    let root = repositoryFile("").path
    let make = Process()
    make.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    make.arguments = ["make", "-s", "-C", root, "PG_CONFIG=\(pg.pgConfig)", "PLUGIN_SCRATCH=\(scratch)",
                      "PLUGIN_DEFINES=\(defines.joined(separator: " "))", scratch + "/mmlite.so"]
    let output = Pipe()
    make.standardOutput = output
    make.standardError = output
    try make.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    make.waitUntilExit()
    guard make.terminationStatus == 0 else { throw HarnessError("building mmlite.so with \(defines) failed:\n\(text)") }
}
