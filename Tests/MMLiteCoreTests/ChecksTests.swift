import MMLiteCore
import Testing

func healthyFacts(_ name: String, version: Int = 150020) -> NodeFacts {
    var facts = NodeFacts(name: name)
    facts.versionNumber = version
    facts.versionString = "\(version / 10000).\(version % 100)"
    facts.database = "shop"
    facts.role = "postgres"
    facts.settings = ["wal_level": "logical", "max_replication_slots": "10", "max_wal_senders": "10",
                      "max_logical_replication_workers": "4", "max_worker_processes": "8", "track_commit_timestamp": "on",
                      "output_plugin_libraries": "pgoutput, test_decoding, mmlite"]
    facts.privileges.superuser = true
    facts.pluginProbe = .ok
    let columns = [ColumnFacts(name: "id", type: "uuid"), ColumnFacts(name: "name", type: "text")]
    facts.tables = [users: TableFacts(name: users, columns: columns, hasPrimaryKey: true),
                    departments: TableFacts(name: departments, columns: columns, hasPrimaryKey: true)]
    return facts
}

func run(_ facts: [NodeFacts], config: MeshConfig? = nil) throws -> [CheckResult] {
    Checks(config: try config ?? threeNodeConfig(), facts: facts, tables: [departments, users]).evaluate()
}

@Suite("Preflight checks")
struct ChecksTests {
    @Test("healthy nodes pass")
    func healthy() throws {
        let results = try run(["n1", "n2", "n3"].map { healthyFacts($0) })
        #expect(Checks.worst(results) == .pass, "\(results.filter { $0.status != .pass })")
    }

    @Test("wal_level says a restart is needed")
    func walLevel() throws {
        var n2 = healthyFacts("n2")
        n2.settings["wal_level"] = "replica"
        let failure = try #require(try run([healthyFacts("n1"), n2, healthyFacts("n3")]).first { $0.status == .failure })
        #expect(failure.node == "n2")
        #expect(failure.check == "wal_level")
        #expect(failure.fix?.contains("ALTER SYSTEM SET wal_level = logical") == true)
        #expect(failure.fix?.contains("restart") == true)
    }

    @Test("output_plugin_libraries: the exact line, and a reload is enough")
    func pluginNotAllowed() throws {
        var n1 = healthyFacts("n1")
        n1.settings["output_plugin_libraries"] = "pgoutput, test_decoding"
        n1.pluginProbe = .failed(sqlState: .insufficientPrivilege, message: "library \"mmlite\" may not be used as an output plugin")
        let failure = try #require(try run([n1, healthyFacts("n2"), healthyFacts("n3")]).first { $0.status == .failure })
        #expect(failure.check == "plugin")
        #expect(failure.fix?.contains("output_plugin_libraries = 'pgoutput, test_decoding, mmlite'") == true)
        #expect(failure.fix?.contains("a reload is enough") == true)
        #expect(failure.fix?.contains("ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'mmlite';") == true)
        #expect(Checks.outputPluginLibrariesLine(current: "pgoutput") == "output_plugin_libraries = 'pgoutput, mmlite'")
    }

    @Test("plugin not installed names make install")
    func pluginMissing() throws {
        var n1 = healthyFacts("n1")
        n1.pluginProbe = .failed(sqlState: .undefinedFile, message: "could not access file \"mmlite\": No such file or directory")
        let failure = try #require(try run([n1, healthyFacts("n2"), healthyFacts("n3")]).first { $0.status == .failure })
        #expect(failure.fix?.contains("make install PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config") == true)
    }

    @Test("16+ everywhere does not need the plugin")
    func nativeOrigin() throws {
        var nodes = ["n1", "n2", "n3"].map { healthyFacts($0, version: 160014) }
        for index in nodes.indices { nodes[index].pluginProbe = .notRun; nodes[index].settings["output_plugin_libraries"] = nil }
        let results = try run(nodes)
        #expect(Checks.worst(results) == .pass)
        #expect(results.contains { $0.check == "plugin" && $0.message.contains("origin = none") })
    }

    @Test("missing table, different columns, no primary key")
    func tables() throws {
        var n2 = healthyFacts("n2")
        n2.tables[users] = nil
        var n3 = healthyFacts("n3")
        n3.tables[departments]!.columns[1].type = "character varying(20)"
        n3.tables[departments]!.columns.append(ColumnFacts(name: "extra", type: "integer"))
        var n1 = healthyFacts("n1")
        n1.tables[users]!.hasPrimaryKey = false
        let failures = try run([n1, n2, n3]).filter { $0.status == .failure }
        #expect(failures.contains { $0.node == "n2" && $0.message.contains("public.users does not exist on n2") })
        #expect(failures.contains { $0.node == "n3" && $0.message.contains("\"name\" is character varying(20) here but text on n1") || $0.message.contains("name is character varying(20) here but text on n1") })
        #expect(failures.contains { $0.node == "n3" && $0.message.contains("extra exists only here") })
        let noKey = try #require(failures.first { $0.node == "n1" })
        #expect(noKey.message.contains("no primary key"))
        #expect(noKey.fix?.contains("REPLICA IDENTITY FULL") == true)
    }

    @Test("capacity follows the mesh size")
    func capacity() throws {
        var n1 = healthyFacts("n1")
        n1.settings["max_replication_slots"] = "1"
        n1.settings["max_worker_processes"] = "2"
        let failures = try run([n1, healthyFacts("n2"), healthyFacts("n3")]).filter { $0.status == .failure }
        #expect(failures.map(\.check).sorted() == ["max_replication_slots", "max_worker_processes"])
    }

    @Test("unreachable node fails with a hint and nothing else about it")
    func unreachable() throws {
        var n3 = NodeFacts(name: "n3")
        n3.connectionError = "connection refused"
        let results = try run([healthyFacts("n1"), healthyFacts("n2"), n3]).filter { $0.node == "n3" }
        #expect(results.count == 1)
        #expect(results[0].status == .failure)
        #expect(results[0].fix?.contains("nodes[3].dsn") == true)
    }

    @Test("a node that answered but whose state could not be read is not called unreachable: a missing right is named as one")
    func unreadable() throws {
        var n3 = healthyFacts("n3")
        n3.role = "watcher"
        n3.readError = ReadError(message: "permission denied for schema mmlite", sqlState: .insufficientPrivilege)
        let results = try run([healthyFacts("n1"), healthyFacts("n2"), n3]).filter { $0.node == "n3" }
        #expect(results.count == 1)
        #expect(results[0].status == .failure)
        #expect(results[0].message == "connected as watcher, but reading the node's state failed: permission denied for schema mmlite")
        #expect(results[0].fix?.contains("docs/security.md") == true && results[0].fix?.contains("pg_hba") == false)
        n3.readError?.sqlState = SQLState(rawValue: "XX000")
        let other = try run([healthyFacts("n1"), healthyFacts("n2"), n3]).filter { $0.node == "n3" }
        #expect(other.first?.fix?.contains("server's log") == true)
    }

    @Test("under sequences = none a colliding key fails, a colliding non-key column warns, distinct ones pass")
    func sequencesNone() throws {
        var config = try threeNodeConfig()
        config.mesh.sequences = .none
        let seq = QualifiedName(schema: "public", name: "users_id_seq")
        var nodes = ["n1", "n2", "n3"].map { healthyFacts($0) }
        func give(_ sequence: (Int) -> MeshSequence) {
            for index in nodes.indices {
                var state = NodeState(name: nodes[index].name, versionNumber: 150020)
                state.sequences = [sequence(index)]
                nodes[index].state = state
            }
        }
        give { _ in MeshSequence(table: users, column: "id", sequence: seq, lastValue: 250) }
        let failure = try #require(try run(nodes, config: config).first { $0.check == "sequence" })
        #expect(failure.status == .failure)
        #expect(failure.fix?.contains("sequences = \"node-offset\"") == true)
        give { _ in MeshSequence(table: users, column: "id", isKey: false, sequence: seq, lastValue: 250) }
        #expect(try run(nodes, config: config).first { $0.check == "sequence" }?.status == .warning)
        give { MeshSequence(table: users, column: "id", sequence: seq, increment: 100, start: Int64($0 + 1)) }
        #expect(try run(nodes, config: config).first { $0.check == "sequence" }?.status == .pass)
    }

    @Test("under node-offset: what apply converts passes, a descending sequence fails, an integer column warns with its capacity")
    func sequencesNodeOffset() throws {
        let seq = QualifiedName(schema: "public", name: "users_id_seq")
        var nodes = ["n1", "n2", "n3"].map { healthyFacts($0) }
        func give(_ sequence: MeshSequence) {
            for index in nodes.indices {
                var state = NodeState(name: nodes[index].name, versionNumber: 150020)
                state.sequences = [sequence]
                nodes[index].state = state
            }
        }
        give(MeshSequence(table: users, column: "id", sequence: seq, lastValue: 250))
        var results = try run(nodes).filter { $0.check.hasPrefix("sequence") }
        #expect(results.allSatisfy { $0.status == .pass }, "\(results)")
        #expect(results.first { $0.node == "n2" }?.message.contains("public.users_id_seq from 258") == true)
        give(MeshSequence(table: users, column: "id", sequence: seq, increment: -1, start: -1, minValue: Int64.min, maxValue: -1))
        #expect(try run(nodes).contains { $0.check == "sequence" && $0.status == .failure && $0.message.contains("counts down") })
        give(MeshSequence(table: users, column: "id", columnType: "integer", sequence: seq, maxValue: Int64(Int32.max), lastValue: 1_000_000))
        results = try run(nodes).filter { $0.check == "sequence_capacity" }
        #expect(results.count == 3)
        #expect(results.allSatisfy { $0.status == .warning && $0.message.contains("about \((Int64(Int32.max) - 1_000_000) / 64) more rows") })
    }

    @Test("a password in a peer_dsn warns; privileges are explained")
    func secretsAndPrivileges() throws {
        var n1 = healthyFacts("n1")
        n1.privileges = Privileges()
        n1.role = "admin"
        let results = try run([n1, healthyFacts("n2"), healthyFacts("n3")], config: try threeNodeConfig(peerPassword: true))
        let warning = try #require(results.first { $0.check == "peer_dsn_password" })
        #expect(warning.fix?.contains(".pgpass") == true)
        #expect(!warning.message.contains("topsecret"))
        let privileges = try #require(results.first { $0.check == "privileges" && $0.node == "n1" })
        #expect(privileges.status == .failure)
        #expect(privileges.fix?.contains("ALTER ROLE admin REPLICATION;") == true)
    }
}

@Suite("Plugin probe failures, by SQLSTATE")
struct PluginFailureTests {
    @Test("insufficient_privilege means not allowed only where output_plugin_libraries exists")
    func classify() {
        #expect(PluginFailure(sqlState: .insufficientPrivilege, allowListExists: true) == .notAllowed)
        #expect(PluginFailure(sqlState: .insufficientPrivilege, allowListExists: false) == .broken)
        #expect(PluginFailure(sqlState: .undefinedFile, allowListExists: true) == .notInstalled)
        #expect(PluginFailure(sqlState: .undefinedFile, allowListExists: false) == .notInstalled)
        #expect(PluginFailure(sqlState: SQLState(rawValue: "XX000"), allowListExists: true) == .broken)
        #expect(PluginFailure(sqlState: nil, allowListExists: true) == .broken)
    }

    @Test("the message text does not decide: a refusal in another language is still a refusal")
    func byCode() throws {
        var n1 = healthyFacts("n1")
        n1.settings["output_plugin_libraries"] = "pgoutput, test_decoding"
        n1.pluginProbe = .failed(sqlState: .insufficientPrivilege, message: "die Bibliothek »mmlite« darf nicht verwendet werden")
        let failure = try #require(try run([n1, healthyFacts("n2"), healthyFacts("n3")]).first { $0.status == .failure })
        #expect(failure.message.hasPrefix("output_plugin_libraries does not allow the mmlite plugin"))
        var n2 = healthyFacts("n2")
        n2.pluginProbe = .failed(sqlState: SQLState(rawValue: "XX000"), message: "could not access file \"mmlite\"")
        let broken = try #require(try run([healthyFacts("n1"), n2, healthyFacts("n3")]).first { $0.status == .failure })
        #expect(broken.message.hasPrefix("the mmlite output plugin does not work on n2"))
    }
}


@Suite("SQLSTATEs")
struct SQLStateTests {
    @Test("deadlock and serialization failure are worth running again; a privilege error, a missing table or no code are not")
    func transient() {
        #expect(SQLState("40P01")?.isTransient == true && SQLState("40001")?.isTransient == true)
        #expect(SQLState("42501")?.isTransient == false && SQLState("42P01")?.isTransient == false && SQLState("40002")?.isTransient == false)
        #expect(SQLState(nil) == nil)
    }
}
