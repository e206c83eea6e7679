import MMLiteCore
import Testing

/// Two nodes, public.users (last-update-wins) and public.departments; `extra` goes into [mesh].
func usersOptedInConfig(_ extra: String = "") throws -> MeshConfig {
    try MeshConfig.parse("""
        [mesh]
        name = "shop"
        tables = ["public.users", "public.departments"]
        \(extra)
        [[nodes]]
        name = "n1"
        dsn = "host=h1 dbname=shop"
        [[nodes]]
        name = "n2"
        dsn = "host=h2 dbname=shop"
        [tables."public.users"]
        conflicts = "last-update-wins"
        """)
}

@Suite("conflict-log retention and the unique-key check")
struct ConflictMaintenanceTests {
    func config(_ extra: String) throws -> MeshConfig {
        try usersOptedInConfig(extra)
    }

    @Test("defaults, accepted spellings, and errors that name the line")
    func retention() throws {
        let defaults = try config("")
        #expect(defaults.mesh.conflictLogRetention == "30 days")
        #expect(defaults.mesh.tombstoneRetention == "7 days")
        let set = try config("conflict_log_retention = \"90 d\"\ntombstone_retention = \"1 week\"")
        #expect(set.mesh.conflictLogRetention == "90 days")
        #expect(set.mesh.tombstoneRetention == "1 week")
        #expect(RetentionInterval("12hours")?.sql == "12 hours")
        for bad in ["forever", "0 days", "30", "1 day; DROP TABLE x", "-1 days", "3 fortnights"] {
            #expect(RetentionInterval(bad) == nil, "\(bad)")
        }
        #expect(throws: ConfigError.self) { try config("conflict_log_retention = \"soon\"") }
        do {
            _ = try config("conflict_log_retention = 30")
            Issue.record("a number without unit must fail")
        } catch let error as ConfigError {
            #expect(error.line == 4)
            #expect(error.field == "mesh.conflict_log_retention")
        }
        #expect(ConflictMaintenance.pruneLog(retention: "30 days").contains("'30 days'::interval"))
    }

    @Test("conflict_apply: auto by default, sql on request, anything else named")
    func conflictApply() throws {
        #expect(try config("").mesh.conflictApply == .auto)
        #expect(try config("conflict_apply = \"sql\"").mesh.conflictApply == .sql)
        do {
            _ = try config("conflict_apply = \"fast\"")
            Issue.record("an unknown implementation must fail")
        } catch let error as ConfigError {
            #expect(error.field == "mesh.conflict_apply")
            #expect(error.message.contains("\"auto\", \"sql\""))
        }
    }

    @Test("doctor warns about a secondary unique index on an opted-in table only, naming resolve --skip")
    func uniqueKey() throws {
        var n1 = healthyFacts("n1"), n2 = healthyFacts("n2")
        n1.tables[users]?.secondaryUniqueIndexes = ["users_email_key"]
        n1.tables[departments]?.secondaryUniqueIndexes = ["departments_name_key"]
        n2.tables[departments]?.secondaryUniqueIndexes = ["departments_name_key"]
        let results = Checks(config: try config(""), facts: [n1, n2], tables: [departments, users]).evaluate()
        let warnings = results.filter { $0.check == "unique_key" }
        #expect(warnings.count == 1, "\(warnings)")
        #expect(warnings.first?.node == "n1")
        #expect(warnings.first?.status == .warning)
        #expect(warnings.first?.message.contains("users_email_key") == true)
        #expect(warnings.first?.fix?.contains("mmlite resolve <node> --skip") == true)
    }

    @Test("status names each node's apply: native, sql, or mixed, and why SQL")
    func applyLabel() {
        #expect(ConflictMaintenance.applyLabel(nativeTables: 0, changeTables: 0) == nil)
        #expect(ConflictMaintenance.applyLabel(nativeTables: 2, changeTables: 2) == "native")
        #expect(ConflictMaintenance.applyLabel(nativeTables: 0, changeTables: 2) == "sql")
        #expect(ConflictMaintenance.applyLabel(nativeTables: 1, changeTables: 3) == "native 1/3")
        #expect(ConflictMaintenance.sqlApplyReason(nativeTables: 2, changeTables: 2, configured: .auto) == nil)
        #expect(ConflictMaintenance.sqlApplyReason(nativeTables: 0, changeTables: 1, configured: .sql) == "conflict_apply = \"sql\" in the configuration")
        #expect(ConflictMaintenance.sqlApplyReason(nativeTables: 0, changeTables: 1, configured: .auto)?.contains("may not create C functions") == true)
        #expect(ConflictMaintenance.sqlApplyReason(nativeTables: 0, changeTables: 1, configured: .auto, installer: ("app_admin", false), pluginInstalled: true)
                == "app_admin, which installed conflict handling, may not create C functions (only a superuser may)")
        #expect(ConflictMaintenance.sqlApplyReason(nativeTables: 0, changeTables: 1, configured: .auto, installer: ("postgres", true), pluginInstalled: false)
                == "mmlite.so is not installed on this server")
        #expect(ConflictMaintenance.sqlApplyReason(nativeTables: 0, changeTables: 1, configured: .auto, installer: ("app_admin", false), pluginInstalled: false)
                == "mmlite.so is not installed on this server; app_admin, which installed conflict handling, may not create C functions (only a superuser may)")
    }
}
