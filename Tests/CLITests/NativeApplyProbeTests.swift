import ClusterHarness
import Foundation
import MMLiteCore
import PostgresClient
import Testing

@Suite("native apply only where it loads", .enabled(if: installation != nil), .serialized)
struct NativeApplyProbeTests {
    @Test("a role that may not create C functions (no superuser) gets the SQL apply trigger, not an error")
    func nonSuperuserFallsBackToSQL() throws {
        let mesh = try TestMesh(1)
        let cluster = mesh[1]
        try cluster.execute("""
            CREATE ROLE app_admin LOGIN;
            GRANT CREATE ON DATABASE postgres TO app_admin;
            ALTER TABLE public.users OWNER TO app_admin;
            """)
        let table = ConflictSQL.Table(name: QualifiedName(schema: "public", name: "users"),
                                      columns: [ConflictSQL.Column(name: "id", type: "integer", keyPosition: 1),
                                                ConflictSQL.Column(name: "name", type: "text"),
                                                ConflictSQL.Column(name: "department_id", type: "integer")],
                                      policy: .lastUpdateWins, nativeApply: true)
        let steps = try ConflictPlanner(tables: [table]).steps(nodes: ["n1"], observed: [:])
        let admin = try cluster.connect(overrides: ["user": "app_admin"])
        defer { admin.close() }
        #expect(try admin.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").scalar == "f")
        for step in steps { try admin.execute(step.sql) }
        let function = try cluster.scalar("""
            SELECT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
            WHERE t.tgname = 'mmlite_apply' AND t.tgrelid = 'mmlite."public.users$changes"'::regclass
            """)
        #expect(function != nil && function != "apply_change", "the SQL apply function, not mmlite.apply_change: \(function ?? "none")")
        // Capture likewise: the plpgsql function on all three triggers.
        #expect(try cluster.scalar("""
            SELECT string_agg(DISTINCT p.proname, ' ') FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
            WHERE t.tgname LIKE 'mmlite\\_capture\\_%' AND t.tgrelid = 'public.users'::regclass
            """) == "public.users$capture")
        // The probes failed, so no C function was created.
        #expect(try cluster.scalar("SELECT count(*) FROM pg_proc WHERE proname IN ('apply_change', 'capture_change')") == "0")
    }

    @Test("doctor says which apply trigger each node will get, and why SQL")
    func doctorNamesTheApply() throws {
        let mesh = try TestMesh(2)
        try mesh[2].execute("CREATE ROLE app_admin LOGIN; GRANT CREATE ON DATABASE postgres TO app_admin; ALTER TABLE public.users OWNER TO app_admin")
        try mesh.writeConfig(dsn: [2: mesh[2].conninfo.replacingOccurrences(of: "user=postgres", with: "user=app_admin")],
                             extraNodes: "\n[tables.\"public.users\"]\nconflicts = \"last-update-wins\"\n")
        let doctor = mesh.mmlite(["doctor"])
        #expect(doctor.out.contains("conflict_apply") && doctor.out.contains("opted-in tables will apply arriving changes with the native trigger"), "\(doctor)")
        #expect(doctor.out.contains("with the SQL trigger (portable, slower): app_admin may not create C functions (only a superuser may)"), "\(doctor)")
        // Nothing was left behind by the probe.
        #expect(try mesh[1].scalar("SELECT count(*) FROM pg_proc WHERE proname = 'mmlite_probe_apply_change'") == "0")
    }
}
