import ClusterHarness
import Foundation
import MMLiteCLI
import MMLiteCore
import PostgresClient
import Testing

@Suite("mmlite against real clusters", .enabled(if: installation != nil))
struct CLIMeshTests {
    @Test("three fresh nodes: doctor passes, apply builds the mesh, writes reach everyone, apply again changes nothing, status shows 6 healthy links")
    func threeNodeMesh() throws {
        let mesh = try TestMesh(3)
        try mesh.writeConfig()

        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.code == 0, "\(doctor)")
        #expect(doctor.out.contains("checks passed"))

        let dryRun = mesh.mmlite(["apply", "--dry-run"])
        #expect(dryRun.code == 0, "\(dryRun)")
        #expect(dryRun.out.contains("18 statements"), "3 offset records + 15")
        #expect(dryRun.out.contains("-- on n2: record sequence offsets (n1=1, n2=2, n3=3); this node's is 2\nCREATE SCHEMA IF NOT EXISTS mmlite;"), "\(dryRun)")
        #expect(dryRun.out.contains("-- on n1: create publication mmlite_shop for 2 tables\nCREATE PUBLICATION mmlite_shop FOR TABLE public.departments, public.users;"))
        #expect(dryRun.out.contains("SELECT pg_create_logical_replication_slot('mmlite_shop_n2', 'mmlite');"))
        #expect(dryRun.out.contains("CREATE SUBSCRIPTION mmlite_shop_from_n1 CONNECTION '\(mesh[1].conninfo)' PUBLICATION mmlite_shop WITH (create_slot = false, slot_name = 'mmlite_shop_n2', copy_data = false);"))
        try mesh.expectUntouched()

        let apply = mesh.mmlite(["apply"])
        #expect(apply.code == 0, "\(apply)")
        #expect(apply.out.contains("[18/18]"))
        for index in 1...3 { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }

        try mesh.expectReplicates(base: 1000)
        // Updates and deletes too, from a node that did not write the row.
        try mesh[3].execute("UPDATE public.users SET name = 'changed' WHERE id = 1000; DELETE FROM public.users WHERE id = 1001")
        #expect(waitUntil(timeout: 30) {
            try mesh.clusters.allSatisfy { try $0.scalar("SELECT string_agg(id || ':' || name, ',' ORDER BY id) FROM public.users") == "1000:changed,1002:from n3" }
        })

        let again = mesh.mmlite(["apply"])
        #expect(again.code == 0, "\(again)")
        #expect(again.out.contains("Nothing to do"))

        // Status, JSON: 6 links, all ok, lag figures present.
        #expect(waitUntil(timeout: 30) { mesh.mmlite(["status", "--check"]).code == 0 })
        let status = mesh.mmlite(["status", "--format", "json", "--check"])
        #expect(status.code == 0, "\(status)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(status.out.utf8)) as? [String: Any])
        #expect(json["state"] as? String == "ok")
        let links = try #require(json["links"] as? [[String: Any]])
        #expect(links.count == 6)
        for link in links {
            #expect(link["state"] as? String == "ok", "\(link)")
            #expect(link["lag_bytes"] is NSNumber, "\(link)")
            #expect(link["lag_seconds"] is NSNumber, "\(link)")
            #expect(link["retained_wal_bytes"] is NSNumber, "\(link)")
            #expect((link["confirmed_flush_lsn"] as? String).flatMap(LSN.init) != nil, "\(link)")
            #expect(link["worker_running"] as? Bool == true)
            #expect(link["slot_active"] as? Bool == true)
            #expect(link.keys.contains("last_error"))
        }
        let table = mesh.mmlite(["status"])
        #expect(table.out.contains("6/6 links ok"), "\(table)")

        // Adding a table to the config adds it everywhere.
        try mesh.writeConfig(tables: ["public.users", "public.departments", "public.events"])
        let dryAdd = mesh.mmlite(["apply", "--dry-run"])
        #expect(dryAdd.out.contains("ALTER PUBLICATION mmlite_shop ADD TABLE public.events;"), "\(dryAdd)")
        #expect(dryAdd.out.contains("ALTER SUBSCRIPTION mmlite_shop_from_n1 REFRESH PUBLICATION WITH (copy_data = false);"))
        let add = mesh.mmlite(["apply"])
        #expect(add.code == 0, "\(add)")
        #expect(add.out.contains("[9/9]"), "3 ADD TABLE + 6 REFRESH")
        try mesh[2].execute("INSERT INTO public.events VALUES (7, 'hello')")
        #expect(waitUntil(timeout: 30) { try mesh.clusters.allSatisfy { try $0.scalar("SELECT payload FROM public.events WHERE id = 7") == "hello" } })
        #expect(mesh.mmlite(["apply"]).out.contains("Nothing to do"))
        #expect(mesh.logErrors().isEmpty, "\(mesh.logErrors())")
    }

    @Test("a node going down in the middle of apply: what was done is reported, a re-run finishes the job")
    func nodeDownMidApply() throws {
        let mesh = try TestMesh(3)
        try mesh.writeConfig()
        let n3 = Unchecked(mesh[3])
        // Steps 1-3 record sequence offsets; step 13 is n2's subscription to n1, step 14 would be n3's.
        let hooks = Hooks(afterStep: { index, _ in if index == 12 { try? n3.value.stop(mode: .immediate) } })
        let first = mesh.mmlite(["apply"], hooks: hooks)
        #expect(first.code == 75, "\(first)")
        #expect(first.err.contains("apply stopped after 13 of 18 changes"))
        #expect(first.err.contains("Not done:\n  n3: subscribe to n1"))
        #expect(first.err.contains("n3 went away. When it is back, run `mmlite apply` again"))
        #expect(try mesh.objects(1) == ["publication:mmlite_shop", "slot:mmlite_shop_n2", "slot:mmlite_shop_n3"])
        #expect(try mesh.objects(2) == ["publication:mmlite_shop", "slot:mmlite_shop_n1", "slot:mmlite_shop_n3", "subscription:mmlite_shop_from_n1"])

        // While n3 is down, apply changes nothing and says why.
        let blocked = mesh.mmlite(["apply"])
        #expect(blocked.code == 69, "\(blocked)")
        #expect(blocked.err.contains("cannot connect to n3"))

        try mesh[3].start()
        #expect(try mesh.objects(3) == ["publication:mmlite_shop", "slot:mmlite_shop_n1", "slot:mmlite_shop_n2"])
        let second = mesh.mmlite(["apply"])
        #expect(second.code == 0, "\(second)")
        #expect(second.out.contains("Applying 5 changes"))
        for index in 1...3 { #expect(try mesh.objects(index) == mesh.completeObjects(index)) }
        try mesh.expectReplicates(base: 2000)
        #expect(mesh.mmlite(["apply"]).out.contains("Nothing to do"))
    }

    @Test("sandbox up builds a working mesh that outlives mmlite; sandbox down removes it")
    func sandbox() throws {
        // Named like the harness's folders: the owner.pid written below lets
        // ClusterHarness.reapAbandoned() remove it if this test process dies.
        let directory = "/tmp/mmlite-h-\(getpid())-sandbox-\(UInt32.random(in: 0..<UInt32.max))"
        defer {
            _ = runMMLite(["sandbox", "down", "--dir", directory], context: Context(console: OutputBuffer().console()))
        }
        let executable = Bundle.main.executableURL?.deletingLastPathComponent().appendingPathComponent("mmlite").path
        var output = ""
        if let executable, FileManager.default.isExecutableFile(atPath: executable) {
            // The real program, so the clusters must survive its exit.
            let (status, text) = try spawnAndWait([executable, "sandbox", "up", "--nodes", "2", "--dir", directory])
            output = text
            #expect(status == 0, "\(output)")
        } else {
            let buffer = OutputBuffer()
            let code = runMMLite(["sandbox", "up", "--nodes", "2", "--dir", directory], context: Context(console: buffer.console()))
            output = buffer.all
            #expect(code == 0, "\(output)")
        }
        try? "\(getpid())\n".write(toFile: directory + "/owner.pid", atomically: true, encoding: .utf8)
        #expect(output.contains("The sandbox is ready"))
        #expect(output.contains("psql \"host=127.0.0.1 port="))
        let config = try MeshConfig.parse(try String(contentsOfFile: directory + "/mmlite.toml", encoding: .utf8))
        #expect(config.nodes.count == 2)
        let n1 = try PGConnection(config.nodes[0].dsn)
        let n2 = try PGConnection(config.nodes[1].dsn)
        try n1.execute("INSERT INTO departments (name) VALUES ('sales')")
        try n2.execute("INSERT INTO users (name) VALUES ('ada')")
        #expect(waitUntil(timeout: 30) {
            try n1.execute("SELECT count(*) FROM users").scalar == "1" && n2.execute("SELECT created_on FROM departments").scalar == "n1"
        })
        n1.close(); n2.close()
        let again = OutputBuffer()
        #expect(runMMLite(["sandbox", "up", "--dir", directory], context: Context(console: again.console())) == 78)
        #expect(again.err.contains("already exists"))

        let down = OutputBuffer()
        #expect(runMMLite(["sandbox", "down", "--dir", directory], context: Context(console: down.console())) == 0, "\(down.all)")
        #expect(!FileManager.default.fileExists(atPath: directory))
        #expect((try? PGConnection(config.nodes[0].dsn)) == nil, "n1 is stopped")
    }
}
