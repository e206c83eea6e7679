import Foundation
import MMLiteCore
import Testing

let accounts = QualifiedName(schema: "public", name: "accounts")

func accountsTable(_ policy: ConflictPolicy = .lastUpdateWins) -> ConflictSQL.Table {
    ConflictSQL.Table(name: accounts, columns: [
        .init(name: "id", type: "integer", keyPosition: 1),
        .init(name: "owner", type: "text"),
        .init(name: "balance", type: "integer"),
        .init(name: "total", type: "integer", generated: true),
    ], policy: policy)
}

@Suite("conflict handling SQL")
struct ConflictSQLTests {
    @Test("opted-in tables are published through their change tables")
    func published() {
        let settings: [QualifiedName: TableSettings] = [accounts: TableSettings(conflicts: .lastUpdateWins)]
        #expect(ConflictSQL.publishedTables([users, accounts], settings: settings)
                == [QualifiedName(schema: "mmlite", name: "public.accounts$changes"), users])
        #expect(ConflictSQL.changeTable(accounts).sql == "mmlite.\"public.accounts$changes\"")
        #expect(ConflictSQL.publishedTables([users], settings: [:]) == [users])
    }

    @Test("delta columns: validated (whole numbers or numeric, not the key, last-update-wins); the change row carries the change and the row life; SQL apply; lives table; stale delta columns dropped")
    func deltaColumns() throws {
        var table = accountsTable()
        table.deltaColumns = ["balance"]
        let sql = try ConflictSQL.install(table, node: "n1")
        #expect(sql.contains("ADD COLUMN IF NOT EXISTS mm_delta_balance integer"))
        #expect(sql.contains("CREATE TABLE IF NOT EXISTS mmlite.\"public.accounts$lives\""))
        #expect(sql.contains("n.balance - o.balance"), "an update ships new - old")
        #expect(sql.contains("ERRCODE = 'not_null_violation'"), "NULL cannot be added to: refused")
        #expect(!sql.contains("apply_change"), "the native trigger has no delta arithmetic: SQL apply")
        #expect(sql.contains("balance = t.balance + d0"), "a change of the row's current life is added")
        #expect(ConflictSQL.definition(table) != ConflictSQL.definition(accountsTable()), "adding delta columns re-installs")
        // Without delta columns: no delta objects, but stale change-table columns go.
        let plain = try ConflictSQL.install(accountsTable(), node: "n1")
        #expect(!plain.contains("mm_delta_balance") && !plain.contains("$lives\" (") && plain.contains("LIKE 'mm\\_delta\\_%'"))

        func refusal(_ columns: [String], policy: ConflictPolicy = .lastUpdateWins) -> String? {
            var bad = accountsTable(policy)
            bad.deltaColumns = columns
            do { try ConflictSQL.validate(bad); return nil } catch { return "\(error)" }
        }
        #expect(refusal(["balance"]) == nil)
        #expect(refusal(["owner"])?.contains("owner is text") == true)
        #expect(refusal(["id"])?.contains("part of the primary key") == true)
        #expect(refusal(["total"])?.contains("generated") == true)
        #expect(refusal(["nope"])?.contains("has no column nope") == true)
        #expect(refusal(["balance"], policy: .keepLocal)?.contains("needs conflicts = \"last-update-wins\"") == true)
    }

    @Test("apply trigger: native where the server's mmlite.so has it (decided on the node), SQL when asked; the choice is part of the definition")
    func applyTrigger() throws {
        let native = try ConflictSQL.install(accountsTable(), node: "n1")
        #expect(native.contains("LANGUAGE C AS '$libdir/mmlite', 'mmlite_apply_change'"))
        #expect(native.contains("EXCEPTION WHEN OTHERS THEN"), "any failure to create the C function (a missing or older mmlite.so, a role that may not create C functions) falls back to SQL")
        #expect(native.contains("IF pg_catalog.to_regprocedure('mmlite.apply_change()') IS NOT NULL THEN"))
        #expect(native.contains("EXECUTE 'CREATE TRIGGER mmlite_apply BEFORE INSERT ON mmlite.\"public.accounts$changes\" FOR EACH ROW EXECUTE FUNCTION mmlite.apply_change(''public.accounts'', ''mmlite.\"public.accounts$versions\"'', ''mmlite.\"public.accounts$apply\"()'', ''n1'')';"))
        #expect(native.contains("EXECUTE 'CREATE TRIGGER mmlite_apply BEFORE INSERT ON mmlite.\"public.accounts$changes\" FOR EACH ROW EXECUTE FUNCTION mmlite.\"public.accounts$apply\"()';"))
        // Capture likewise: mmlite.capture_change() with the writable columns as installed, else the plpgsql function.
        #expect(native.contains("LANGUAGE C AS '$libdir/mmlite', 'mmlite_capture_change'"))
        #expect(native.contains("IF pg_catalog.to_regprocedure('mmlite.capture_change()') IS NOT NULL THEN"))
        #expect(native.contains("FOR EACH STATEMENT EXECUTE FUNCTION mmlite.capture_change(''mmlite.\"public.accounts$versions\"'', ''mmlite.\"public.accounts$changes\"'', ''mmlite.\"public.accounts$capture\"()'', ''n1'', ''id'', ''owner'', ''balance'')';"))
        #expect(native.components(separatedBy: "EXECUTE FUNCTION mmlite.capture_change(").count == 4, "the three capture triggers")
        #expect(native.components(separatedBy: "EXECUTE FUNCTION mmlite.\"public.accounts$capture\"()").count == 4, "and their SQL fallbacks")
        var sqlOnly = accountsTable()
        sqlOnly.nativeApply = false
        let sql = try ConflictSQL.install(sqlOnly, node: "n1")
        #expect(!sql.contains("apply_change") && !sql.contains("capture_change"))
        #expect(sql.contains("CREATE TRIGGER mmlite_apply BEFORE INSERT ON mmlite.\"public.accounts$changes\" FOR EACH ROW EXECUTE FUNCTION mmlite.\"public.accounts$apply\"();"))
        #expect(ConflictSQL.definition(sqlOnly) != ConflictSQL.definition(accountsTable()), "switching conflict_apply re-installs")
    }

    @Test("generated SQL: schema-qualified, version compared in the data, replica trigger on the change table, generated columns left out")
    func install() throws {
        let sql = try ConflictSQL.install(accountsTable(), node: "n1")
        if let path = ProcessInfo.processInfo.environment["MMLITE_DUMP_CONFLICT_SQL"] { try sql.write(toFile: path, atomically: true, encoding: .utf8) }
        // Statement-level capture: one trigger per event (transition tables need that).
        #expect(sql.contains("CREATE TRIGGER mmlite_capture_ins AFTER INSERT ON public.accounts\n    REFERENCING NEW TABLE AS mm_new FOR EACH STATEMENT"))
        #expect(sql.contains("CREATE TRIGGER mmlite_capture_upd AFTER UPDATE ON public.accounts\n    REFERENCING OLD TABLE AS mm_old NEW TABLE AS mm_new FOR EACH STATEMENT"))
        #expect(sql.contains("CREATE TRIGGER mmlite_capture_del AFTER DELETE ON public.accounts\n    REFERENCING OLD TABLE AS mm_old FOR EACH STATEMENT"))
        #expect(sql.contains("DROP TRIGGER IF EXISTS mmlite_capture ON public.accounts;"), "generation 2's row trigger goes")
        #expect(sql.contains("ALTER TABLE mmlite.\"public.accounts$changes\" ENABLE REPLICA TRIGGER mmlite_apply;"))
        // Typed layout: no jsonb between capture and apply.
        #expect(sql.contains("SELECT r.id, now_ms, 0, 'n1', r.op FROM (SELECT n.id, 'insert' AS op FROM mm_new n) r"))
        #expect(sql.contains("SELECT 'n1', v.op, v.v_ms, v.v_counter, v.prev_ms, v.prev_counter, v.prev_node, v.id, n.owner, n.balance FROM v JOIN mm_new n ON n.id = v.id;"))
        #expect(sql.contains("WITH (fillfactor = 70)"))
        // Apply's fast path: lock the user row, then check and update the version, in one statement.
        #expect(sql.contains("FROM (SELECT FROM public.accounts t WHERE t.id = NEW.id FOR UPDATE) AS u"))
        #expect(sql.contains("UPDATE public.accounts t SET owner = NEW.owner, balance = NEW.balance WHERE t.id = NEW.id;"))
        #expect(!sql.contains("jsonb_populate_record") && !sql.contains("row_data jsonb"))
        #expect(sql.contains("PERFORM FROM public.accounts t WHERE t.id = NEW.id FOR UPDATE;"))
        #expect(sql.contains("INSERT INTO public.accounts (id, owner, balance) VALUES (NEW.id, NEW.owner, NEW.balance)"))
        #expect(sql.contains("ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, balance = EXCLUDED.balance;"))
        #expect(sql.contains("IF NEW.mm_node = 'n1' THEN RETURN NULL; END IF;"))
        #expect(sql.contains("mmlite.clock_offset_ms"))
        #expect(sql.contains("(NEW.mm_v_ms, NEW.mm_v_counter, NEW.mm_node COLLATE \"C\") > (v.v_ms, v.v_counter, v.v_node COLLATE \"C\")"), "ties broken by node name, the same on every node")
        #expect(!sql.contains("total"))
        // Nothing in the apply path relies on search_path: every table is qualified.
        // (`FROM v` reads a CTE; `IS DISTINCT FROM` compares values; mm_old/mm_new
        // are the capture trigger's transition tables.)
        for line in sql.split(separator: "\n") where (line.contains(" FROM ") || line.contains("INSERT INTO"))
            && !line.hasSuffix(" FROM v;") && !line.contains("DISTINCT FROM")
            && !line.contains("FROM mm_old") && !line.contains("FROM mm_new") && !line.contains("FROM v JOIN mm_new")
            && !line.contains("FROM v LEFT JOIN mm_new") {
            #expect(line.contains("mmlite.") || line.contains("public.") || line.contains("pg_catalog."), "\(line)")
        }
    }

    @Test("policies and validation")
    func policies() throws {
        #expect(try ConflictSQL.install(accountsTable(.keepLocal), node: "n1").contains("reason := 'keep-local policy';"))
        #expect(try ConflictSQL.install(accountsTable(.applyRemote), node: "n1").contains("'remote', 'apply-remote policy'"))
        #expect(try ConflictSQL.install(accountsTable(.error), node: "n1").contains("RAISE EXCEPTION 'mmlite: conflict on %"))
        var noKey = accountsTable()
        noKey.columns = noKey.columns.map { var c = $0; c.keyPosition = nil; return c }
        #expect(throws: ConflictSQL.GenerationError.self) { try ConflictSQL.install(noKey, node: "n1") }
        let long = ConflictSQL.Table(name: QualifiedName(schema: "public", name: String(repeating: "x", count: 50)),
                                     columns: [.init(name: "id", type: "integer", keyPosition: 1)], policy: .lastUpdateWins)
        #expect(throws: ConflictSQL.GenerationError.self) { try ConflictSQL.validate(long) }
        let clash = ConflictSQL.Table(name: accounts, columns: [.init(name: "id", type: "integer", keyPosition: 1), .init(name: "mm_op", type: "text")], policy: .lastUpdateWins)
        #expect(throws: ConflictSQL.GenerationError.self) { try ConflictSQL.validate(clash) }
        let keyClash = ConflictSQL.Table(name: accounts, columns: [.init(name: "op", type: "text", keyPosition: 1)], policy: .lastUpdateWins)
        #expect(throws: ConflictSQL.GenerationError.self) { try ConflictSQL.validate(keyClash) }
        let nonKeyOp = ConflictSQL.Table(name: accounts, columns: [.init(name: "id", type: "integer", keyPosition: 1), .init(name: "op", type: "text")], policy: .lastUpdateWins)
        #expect(throws: Never.self) { try ConflictSQL.validate(nonKeyOp) }
        let keyOnly = ConflictSQL.Table(name: accounts, columns: [.init(name: "id", type: "integer", keyPosition: 1)], policy: .lastUpdateWins)
        #expect(try ConflictSQL.install(keyOnly, node: "n1").contains("ON CONFLICT (id) DO NOTHING"))
    }

    @Test("planner: installs where missing or different, nothing when installed, uninstalls tables that opted out")
    func planner() throws {
        let table = accountsTable()
        let planner = ConflictPlanner(tables: [table])
        let fresh = try planner.steps(nodes: ["n1", "n2"], observed: [:])
        #expect(fresh.map(\.node) == ["n1", "n2"])
        #expect(fresh.allSatisfy { $0.kind == .installConflicts && $0.sql.hasPrefix("CREATE SCHEMA IF NOT EXISTS mmlite;") })
        #expect(fresh[1].sql.contains("IF NEW.mm_node = 'n2'"))

        let definition = ConflictSQL.definition(table)
        #expect(definition == ConflictSQL.definition(accountsTable()), "stable")
        #expect(definition != ConflictSQL.definition(accountsTable(.keepLocal)))
        let done = try planner.steps(nodes: ["n1", "n2"], observed: ["n1": ["public.accounts": definition], "n2": ["public.accounts": definition]])
        #expect(done.isEmpty)

        let changed = try ConflictPlanner(tables: [accountsTable(.keepLocal)]).steps(nodes: ["n1"], observed: ["n1": ["public.accounts": definition]])
        #expect(changed.count == 1 && !changed[0].sql.contains("CREATE SCHEMA") && changed[0].summary.contains("keep-local"))

        let optedOut = try ConflictPlanner(tables: []).steps(nodes: ["n1"], observed: ["n1": ["public.accounts": definition]])
        #expect(optedOut.count == 1 && optedOut[0].sql.contains("DROP TRIGGER IF EXISTS mmlite_capture ON public.accounts;"))
        #expect(optedOut[0].sql.contains("DROP TRIGGER IF EXISTS mmlite_capture_ins ON public.accounts;") && optedOut[0].sql.contains("DROP TRIGGER IF EXISTS mmlite_capture_del ON public.accounts;"))
        #expect(try ConflictPlanner(tables: []).steps(nodes: ["n1"], observed: [:]).isEmpty)
    }

    @Test("TRUNCATE of an opted-in table is refused for local statements (ordinary trigger), with feature_not_supported and what to use instead; opting out drops the guard")
    func truncateGuard() throws {
        let sql = try ConflictSQL.install(accountsTable(), node: "n1")
        #expect(sql.contains("CREATE TRIGGER mmlite_truncate BEFORE TRUNCATE ON public.accounts\n    FOR EACH STATEMENT EXECUTE FUNCTION mmlite.refuse_truncate('last-update-wins');"))
        #expect(!sql.contains("ENABLE REPLICA TRIGGER mmlite_truncate") && !sql.contains("ENABLE ALWAYS TRIGGER mmlite_truncate"),
                "fires for local statements only, not in the apply worker nor under session_replication_role = replica")
        #expect(sql.contains("ERRCODE = 'feature_not_supported'"))
        #expect(sql.contains("IF pg_catalog.current_setting('mmlite.allow_truncate', true) = 'on' THEN\n        RETURN NULL;"),
                "a transaction emptying it on every node at once (mmlite ddl) says so: \(ConflictSQL.allowTruncate)")
        #expect(sql.contains("use DELETE FROM %s (replicated row by row), or mmlite ddl \"TRUNCATE %s\" to empty it on every node at once"))
        #expect(ConflictSQL.generation == 4 && ConflictSQL.definition(accountsTable()).hasPrefix("g4-"), "existing meshes reinstall on apply")
        #expect(ConflictSQL.uninstall(registryName: "public.accounts", table: accounts).contains("DROP TRIGGER IF EXISTS mmlite_truncate ON public.accounts;"))
    }
}
