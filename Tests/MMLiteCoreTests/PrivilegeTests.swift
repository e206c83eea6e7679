import MMLiteCore
import Testing

/// A PostgreSQL 16+ node whose role is not a superuser but holds every
/// documented grant (docs/security.md, "Managed PostgreSQL").
func managedFacts(_ name: String, version: Int = 180006) -> NodeFacts {
    var facts = healthyFacts(name, version: version)
    facts.role = "app_admin"
    facts.privileges = Privileges()
    facts.privileges.replication = true
    facts.privileges.createOnDatabase = true
    facts.privileges.createSubscription = true
    facts.privileges.setSessionReplicationRole = true
    facts.privileges.originFunctions = Set(OriginFunction.allCases)
    facts.peerRole = PeerRoleFacts(name: "app_admin", exists: true, replication: true)
    facts.pluginProbe = .notRun
    return facts
}

func managedConfig(peerPasswords: Bool = true) throws -> MeshConfig {
    var text = """
    [mesh]
    name = "shop"
    tables = ["public.users", "public.departments"]

    """
    for index in 1...3 {
        text += """
        [[nodes]]
        name = "n\(index)"
        dsn = "host=h\(index) dbname=shop user=app_admin"
        \(peerPasswords ? "peer_dsn = \"host=h\(index) dbname=shop user=app_admin password=s3cret\"" : "")

        """
    }
    return try MeshConfig.parse(text)
}

func evaluate(_ facts: [NodeFacts], _ purpose: Checks.Purpose = .doctor, config: MeshConfig? = nil) throws -> [CheckResult] {
    Checks(config: try config ?? managedConfig(), facts: facts, tables: [departments, users], purpose: purpose).evaluate()
}

/// A running mesh of n1 and n2 (publication and a subscription each) in which n3 has still to join.
func withPendingN3(_ facts: [NodeFacts]) -> [NodeFacts] {
    facts.map { facts in
        var facts = facts
        var state = NodeState(name: facts.name, versionNumber: facts.versionNumber)
        if facts.name != "n3" {
            state.publication = PublicationState(tables: [users, departments])
            let peer = facts.name == "n1" ? "n2" : "n1"
            state.subscriptions = ["mmlite_shop_from_\(peer)": SubscriptionState(slotName: "mmlite_shop_\(facts.name)", publications: ["mmlite_shop"])]
        }
        facts.state = state
        return facts
    }
}

@Suite("Rights of a role that is not a superuser")
struct PrivilegeTests {
    @Test("every documented grant on 16+, passwords in peer_dsn: no failure and no warning; the password is advice, not a warning")
    func documentedGrantsPass() throws {
        let results = try evaluate(["n1", "n2", "n3"].map { managedFacts($0) })
        #expect(Checks.worst(results) == .pass, "\(results.filter { $0.status != .pass })")
        let advice = try #require(results.first { $0.check == "peer_dsn_password" })
        #expect(advice.status == .pass)
        #expect(advice.message.contains("REPLICATION"))
        #expect(!advice.message.contains("s3cret"))
    }

    /// Each documented right, taken away alone, and the statement doctor must name.
    static let apply: [(String, @Sendable (inout NodeFacts) -> Void, String)] = [
        ("REPLICATION", { $0.privileges.replication = false }, "ALTER ROLE app_admin REPLICATION;"),
        ("CREATE on the database", { $0.privileges.createOnDatabase = false }, "GRANT CREATE ON DATABASE shop TO app_admin;"),
        ("pg_create_subscription", { $0.privileges.createSubscription = false }, "GRANT pg_create_subscription TO app_admin;"),
        ("table ownership", { $0.tables[users]?.isOwner = false }, "ALTER TABLE public.users OWNER TO app_admin;"),
    ]

    @Test("each right apply needs, missing alone: doctor and apply fail on that node with the exact statement")
    func applyRights() throws {
        for (label, remove, statement) in Self.apply {
            var n2 = managedFacts("n2")
            remove(&n2)
            for purpose in [Checks.Purpose.doctor, .apply] {
                let results = try evaluate([managedFacts("n1"), n2, managedFacts("n3")], purpose)
                let failures = results.filter { $0.status == .failure }
                #expect(failures.count == 1, "\(label), \(purpose): \(failures)")
                #expect(failures.first?.node == "n2" && failures.first?.check == "privileges", "\(label)")
                #expect(failures.first?.fix?.contains(statement) == true, "\(label): \(failures.first?.fix ?? "")")
            }
        }
    }

    /// The rights join needs, each missing alone.
    static let join: [(String, @Sendable (inout NodeFacts) -> Void, String)] = [
        ("SET session_replication_role", { $0.privileges.setSessionReplicationRole = false }, "GRANT SET ON PARAMETER session_replication_role TO app_admin;"),
        ("origin session setup", { $0.privileges.originFunctions.remove(.sessionSetup) }, "GRANT EXECUTE ON FUNCTION pg_replication_origin_session_setup(text) TO app_admin;"),
        ("origin progress", { $0.privileges.originFunctions.remove(.progress) }, "GRANT EXECUTE ON FUNCTION pg_replication_origin_progress(text, boolean) TO app_admin;"),
    ]

    @Test("join's rights: a failure on the node that has to join, a warning on a member, nothing for apply; join checks the joining node and its source only")
    func joinRights() throws {
        for (label, remove, statement) in Self.join {
            var n3 = managedFacts("n3")
            remove(&n3)
            let doctor = try evaluate(withPendingN3([managedFacts("n1"), managedFacts("n2"), n3]))
            let failure = try #require(doctor.first { $0.status == .failure }, "\(label)")
            #expect(failure.node == "n3" && failure.check == "join_privileges")
            #expect(failure.fix?.contains(statement) == true, "\(label): \(failure.fix ?? "")")
            #expect(try evaluate(withPendingN3([managedFacts("n1"), managedFacts("n2"), n3]), .apply).allSatisfy { $0.status == .pass })
            let join = try evaluate(withPendingN3([managedFacts("n1"), managedFacts("n2"), n3]), .join(node: "n3", source: "n1"))
            #expect(join.filter { $0.status == .failure }.map(\.check) == ["join_privileges"], "\(label)")

            var n1 = managedFacts("n1")
            remove(&n1)
            let member = try evaluate(withPendingN3([n1, managedFacts("n2"), managedFacts("n3")]))
            #expect(member.first { $0.node == "n1" && $0.check == "join_privileges" }?.status == .warning, "\(label)")
            let fromN2 = try evaluate(withPendingN3([n1, managedFacts("n2"), managedFacts("n3")]), .join(node: "n3", source: "n2"))
            #expect(Checks.worst(fromN2) == .pass, "\(label): n1 plays no part in joining n3 from n2")
        }
        // The source needs only the progress function.
        var n1 = managedFacts("n1")
        n1.privileges.setSessionReplicationRole = false
        #expect(Checks.worst(try evaluate(withPendingN3([n1, managedFacts("n2"), managedFacts("n3")]), .join(node: "n3", source: "n1"))) == .pass)
        n1.privileges.originFunctions.remove(.progress)
        let source = try evaluate(withPendingN3([n1, managedFacts("n2"), managedFacts("n3")]), .join(node: "n3", source: "n1"))
        #expect(source.first { $0.status == .failure }?.fix?.contains("GRANT EXECUTE ON FUNCTION pg_replication_origin_progress(text, boolean) TO app_admin;") == true)
    }

    @Test("16+: a non-superuser's subscriptions need the password in the peer_dsn; a superuser's do not")
    func passwordRequired() throws {
        let config = try managedConfig(peerPasswords: false)
        let results = try evaluate(["n1", "n2", "n3"].map { managedFacts($0) }, config: config)
        let failures = results.filter { $0.check == "peer_password" }
        #expect(failures.count == 6, "every subscriber, for every publisher: \(failures)")
        #expect(failures.allSatisfy { $0.status == .failure && $0.fix?.contains("password=") == true })
        let superusers = ["n1", "n2", "n3"].map { name -> NodeFacts in var f = managedFacts(name); f.privileges.superuser = true; return f }
        #expect(try evaluate(superusers, config: config).allSatisfy { $0.check != "peer_password" })
        // 15 has no non-superuser subscriptions at all: the privileges check says superuser.
        let old = try evaluate(["n1", "n2", "n3"].map { managedFacts($0, version: 150020) }, config: config)
        #expect(old.first { $0.check == "privileges" }?.message.contains("CREATE SUBSCRIPTION needs it before PostgreSQL 16") == true)
        #expect(old.allSatisfy { $0.check != "peer_password" })
    }

    @Test("the peer_dsn's role: missing, without LOGIN or REPLICATION, each named with its fix")
    func peerRole() throws {
        let cases: [(PeerRoleFacts, String)] = [
            (PeerRoleFacts(name: "replicator", exists: false), "CREATE ROLE replicator LOGIN REPLICATION"),
            (PeerRoleFacts(name: "replicator", exists: true, replication: false), "ALTER ROLE replicator REPLICATION;"),
            (PeerRoleFacts(name: "replicator", exists: true, replication: true, canLogin: false), "ALTER ROLE replicator LOGIN;"),
        ]
        for (role, statement) in cases {
            var n1 = managedFacts("n1")
            n1.peerRole = role
            let failure = try #require(try evaluate([n1, managedFacts("n2"), managedFacts("n3")]).first { $0.status == .failure })
            #expect(failure.node == "n1" && failure.check == "peer_role")
            #expect(failure.fix?.contains(statement) == true, "\(failure.fix ?? "")")
        }
    }

    @Test("a 16+ publisher that lets a non-superuser's subscription in without a password: the peer probe's SQLSTATE names pg_hba.conf")
    func trustRefused() throws {
        var n2 = managedFacts("n2")
        n2.peerProbes["n1"] = .failed(sqlState: .prohibitedSQLStatementAttempted, message: "password is required")
        let failure = try #require(try evaluate([managedFacts("n1"), n2, managedFacts("n3")]).first { $0.status == .failure })
        #expect(failure.check == "peer" && failure.fix?.contains("scram-sha-256") == true)
    }

    @Test("grants render quoted identifiers; EXECUTE rights merge into one statement")
    func rendering() {
        #expect(RequiredRight.createOnDatabase.grant(role: "App Admin", database: "my-db") == "GRANT CREATE ON DATABASE \"my-db\" TO \"App Admin\";")
        let merged = RequiredRights.merged([.execute([.progress]), .replication, .execute([.create, .progress])])
        #expect(merged == [.replication, .execute([.create, .progress])])
    }
}
