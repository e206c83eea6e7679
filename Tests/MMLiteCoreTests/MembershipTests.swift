import MMLiteCore
import Testing

@Suite("Join and membership")
struct JoinPlanTests {
    @Test("a fresh mesh: every configured node is a member; a running one: only nodes with the publication")
    func membership() throws {
        let config = try threeNodeConfig()
        var states = freshStates()
        #expect(Membership.members(config: config, states: states) == ["n1", "n2", "n3"])
        states["n1"]!.publication = PublicationState(tables: [users])
        states["n2"]!.publication = PublicationState(tables: [users])
        states["n2"]!.subscriptions["mmlite_shop_from_n1"] = SubscriptionState(slotName: "mmlite_shop_n2", publications: ["mmlite_shop"])
        #expect(Membership.members(config: config, states: states) == ["n1", "n2"])
        #expect(Membership.pending(config: config, states: states) == ["n3"])

        // apply leaves n3 out and says to join it.
        let plan = try Planner(config: config, tables: [users]).plan(states: states)
        #expect(!plan.steps.contains { $0.node == "n3" || $0.sql.contains("mmlite_shop_n3") || $0.sql.contains("from_n3") })
        #expect(plan.notes.contains { $0.contains("n3 has not joined the mesh") && $0.contains("mmlite join n3 --from n1") })
        // Join wires it in with the explicit member set.
        let wiring = try Planner(config: config, tables: [users]).plan(states: states, members: ["n1", "n2", "n3"])
        #expect(wiring.steps.contains { $0.node == "n3" && $0.kind == .createSubscription })
    }

    @Test("join sees a lone publication without subscriptions as a one-node mesh; apply does not")
    func oneNodeMesh() throws {
        let config = try threeNodeConfig()
        var states = freshStates()
        states["n1"]!.publication = PublicationState(tables: [users])
        #expect(!Membership.isRunning(config: config, states: states))
        #expect(Membership.members(config: config, states: states) == ["n1", "n2", "n3"])
        #expect(Membership.members(config: config, states: states, joiningFrom: "n1") == ["n1"])
        #expect(Membership.members(config: config, states: states, joiningFrom: "n2") == ["n1", "n2", "n3"])
        states["n2"]!.publication = PublicationState(tables: [users])
        #expect(Membership.members(config: config, states: states, joiningFrom: "n1") == ["n1", "n2", "n3"],
                "two publications and no subscription: a fresh mesh apply was building, not a one-node mesh")
    }

    @Test("exported-snapshot slot syntax by major")
    func slotSyntax() {
        #expect(JoinSQL.createSlotExportingSnapshot(slot: "mmlite_shop_n4", plugin: "mmlite", major: 15)
                == "CREATE_REPLICATION_SLOT mmlite_shop_n4 LOGICAL mmlite (SNAPSHOT 'export')")
        #expect(JoinSQL.createSlotExportingSnapshot(slot: "mmlite_shop_n4", plugin: "pgoutput", major: 14)
                == "CREATE_REPLICATION_SLOT mmlite_shop_n4 LOGICAL pgoutput EXPORT_SNAPSHOT")
    }

    @Test("slots are advanced only where the source applied further; copy progress")
    func advanceAndProgress() {
        #expect(JoinSQL.needsAdvance(slotAt: LSN(100), applied: LSN(200)))
        #expect(!JoinSQL.needsAdvance(slotAt: LSN(200), applied: LSN(150)))
        let progress = CopyProgress(bytes: 10 << 20, expectedBytes: 40 << 20, seconds: 2)
        #expect(progress.line == "10 MB of ~40 MB, 5 MB/s, ETA 6 s")
    }
}
