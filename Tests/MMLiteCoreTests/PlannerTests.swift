import MMLiteCore
import Testing

func threeNodeConfig(filter: FilterMode = .auto, peerPassword: Bool = false) throws -> MeshConfig {
    try MeshConfig.parse("""
    [mesh]
    name = "shop"
    tables = ["public.users", "public.departments"]
    filter = "\(filter.rawValue)"
    [[nodes]]
    name = "n1"
    dsn = "host=h1 dbname=shop"
    \(peerPassword ? "peer_dsn = \"host=h1 dbname=shop user=rep password=topsecret\"" : "")
    [[nodes]]
    name = "n2"
    dsn = "host=h2 dbname=shop"
    [[nodes]]
    name = "n3"
    dsn = "host=h3 dbname=shop"
    """)
}

let users = QualifiedName(schema: "public", name: "users")
let departments = QualifiedName(schema: "public", name: "departments")

func freshStates(_ versions: [Int] = [150020, 150020, 150020]) -> [String: NodeState] {
    var states: [String: NodeState] = [:]
    for (index, version) in versions.enumerated() {
        states["n\(index + 1)"] = NodeState(name: "n\(index + 1)", versionNumber: version)
    }
    return states
}

/// Applies a plan to observed states the way the servers would.
func simulate(_ plan: Plan, on states: inout [String: NodeState], tables: [QualifiedName]) {
    let names = ObjectNames(mesh: "shop")
    for step in plan.steps {
        var state = states[step.node]!
        switch step.action {
        case .createPublication: state.publication = PublicationState(tables: Set(tables))
        case .addTables, .dropTables: state.publication?.tables = Set(tables)
        case .createSlot(let slot, let filter, _):
            state.slots[slot] = SlotState(plugin: filter.slotPlugin)
        case .createSubscription(let subscription, _, _, let publication, _, let filter):
            state.subscriptions[subscription] = SubscriptionState(slotName: names.slot(subscriber: step.node), publications: [publication],
                                                                  origin: filter == .originNone ? "none" : "any", tables: Set(tables))
        case .refreshSubscription(let subscription):
            state.subscriptions[subscription]?.tables = Set(tables)
        case .setSubscriptionConnection, .setSubscriptionOrigin, .installConflicts: break
        case .recordSequenceOffsets(_, let offsets, let own):
            state.sequenceOffsets = offsets
            state.nodeOffset = own
        case .convertSequence(let sequence, _, let step, _, let restart):
            for index in state.sequences.indices where state.sequences[index].sequence == sequence {
                state.sequences[index].increment = Int64(step)
                state.sequences[index].start = restart
                state.sequences[index].lastValue = nil
            }
        }
        states[step.node] = state
    }
}

@Suite("Plan")
struct PlannerTests {
    @Test("a fresh three-node mesh: sequence offsets, publications, then slots, then subscriptions")
    func fresh() throws {
        let planner = Planner(config: try threeNodeConfig(), tables: [users, departments])
        let fullPlan = try planner.plan(states: freshStates())
        #expect(fullPlan.steps.prefix(3).map(\.kind) == Array(repeating: .recordSequenceOffsets, count: 3))
        #expect(fullPlan.steps.prefix(3).map(\.summary) == ["n1", "n2", "n3"].enumerated().map {
            "record sequence offsets (n1=1, n2=2, n3=3); this node's is \($0.offset + 1)"
        })
        let plan = Plan(steps: Array(fullPlan.steps.dropFirst(3)))
        #expect(plan.steps.count == 3 + 6 + 6)
        #expect(plan.steps.prefix(3).allSatisfy { $0.kind == .createPublication })
        #expect(plan.steps[3..<9].allSatisfy { $0.kind == .createSlot })
        #expect(plan.steps[9...].allSatisfy { $0.kind == .createSubscription })
        #expect(plan.steps[0].sql == "CREATE PUBLICATION mmlite_shop FOR TABLE public.departments, public.users")
        #expect(plan.steps[3].node == "n1")
        #expect(plan.steps[3].sql == "SELECT pg_create_logical_replication_slot('mmlite_shop_n2', 'mmlite')")
        let subscription = try #require(plan.steps.first { $0.kind == .createSubscription && $0.node == "n2" })
        #expect(subscription.sql == "CREATE SUBSCRIPTION mmlite_shop_from_n1 CONNECTION 'host=h1 dbname=shop' PUBLICATION mmlite_shop WITH (create_slot = false, slot_name = 'mmlite_shop_n2', copy_data = false)")
        // Every subscription's slot is created before it.
        for (index, step) in plan.steps.enumerated() where step.kind == .createSubscription {
            let slot = step.sql.components(separatedBy: "slot_name = '")[1].prefix { $0 != "'" }
            #expect(plan.steps[..<index].contains { $0.kind == .createSlot && $0.sql.contains("'\(slot)'") })
        }
    }

    @Test("applying the plan leaves nothing to do")
    func idempotent() throws {
        let planner = Planner(config: try threeNodeConfig(), tables: [users, departments])
        var states = freshStates()
        simulate(try planner.plan(states: states), on: &states, tables: [users, departments])
        let again = try planner.plan(states: states)
        #expect(again.isEmpty)
        #expect(again.notes.isEmpty)
    }

    @Test("a partially applied plan is finished by the next one")
    func partial() throws {
        let planner = Planner(config: try threeNodeConfig(), tables: [users, departments])
        var states = freshStates()
        let full = try planner.plan(states: states)
        simulate(Plan(steps: Array(full.steps.prefix(7)), notes: []), on: &states, tables: [users, departments])
        let rest = try planner.plan(states: states)
        #expect(rest.steps.map(\.sql) == full.steps.dropFirst(7).map(\.sql))
    }

    @Test("a table added to the config: ADD TABLE everywhere, then REFRESH on every subscriber")
    func addTable() throws {
        let events = QualifiedName(schema: "public", name: "events")
        var states = freshStates()
        let before = Planner(config: try threeNodeConfig(), tables: [users, departments])
        simulate(try before.plan(states: states), on: &states, tables: [users, departments])
        let after = Planner(config: try threeNodeConfig(), tables: [users, departments, events])
        let plan = try after.plan(states: states)
        #expect(plan.steps.filter { $0.kind == .addTables }.count == 3)
        #expect(plan.steps.filter { $0.kind == .refreshSubscription }.count == 6)
        #expect(plan.steps.first?.sql == "ALTER PUBLICATION mmlite_shop ADD TABLE public.events")
        #expect(plan.steps.last?.sql == "ALTER SUBSCRIPTION mmlite_shop_from_n3 REFRESH PUBLICATION WITH (copy_data = false)")
        let lastAdd = plan.steps.lastIndex { $0.kind == .addTables }!
        let firstRefresh = plan.steps.firstIndex { $0.kind == .refreshSubscription }!
        #expect(lastAdd < firstRefresh)
        simulate(plan, on: &states, tables: [users, departments, events])
        #expect(try after.plan(states: states).isEmpty)
    }

    @Test("filter choice per link", arguments: [
        (FilterMode.auto, 15, 15, LinkFilter.mmlite), (.auto, 16, 16, .originNone), (.auto, 15, 18, .mmlite),
        (.auto, 18, 15, .mmlite), (.mmlite, 17, 17, .mmlite), (.originNone, 16, 18, .originNone),
    ])
    func filterChoice(_ mode: FilterMode, _ publisher: Int, _ subscriber: Int, _ expected: LinkFilter) throws {
        #expect(try LinkFilter.choose(mode, publisherMajor: publisher, subscriberMajor: subscriber) == expected)
    }

    @Test("origin-none is refused when a node is older than 16")
    func originNoneTooOld() throws {
        #expect(throws: PlanError.self) { try LinkFilter.choose(.originNone, publisherMajor: 15, subscriberMajor: 16) }
        let planner = Planner(config: try threeNodeConfig(filter: .originNone), tables: [users])
        #expect(throws: PlanError.self) { try planner.plan(states: freshStates([160000, 150000, 160000])) }
    }

    @Test("mixed versions: origin = none only between 16+ nodes")
    func mixed() throws {
        let planner = Planner(config: try threeNodeConfig(), tables: [users])
        let plan = try planner.plan(states: freshStates([150020, 160014, 180006]))
        let slot = { (node: String, sub: String) in plan.steps.first { $0.node == node && $0.sql.contains("'mmlite_shop_\(sub)'") }!.sql }
        #expect(slot("n2", "n3").hasSuffix("'pgoutput')"))
        #expect(slot("n2", "n1").hasSuffix("'mmlite')"))
        #expect(slot("n1", "n3").hasSuffix("'mmlite')"))
        let sub = plan.steps.first { $0.node == "n3" && $0.sql.contains("from_n2") }!.sql
        #expect(sub.contains("origin = none"))
        let sub2 = plan.steps.first { $0.node == "n3" && $0.sql.contains("from_n1") }!.sql
        #expect(!sub2.contains("origin"))
    }

    @Test("passwords in peer_dsn are masked in what is printed only")
    func maskedSQL() throws {
        let planner = Planner(config: try threeNodeConfig(peerPassword: true), tables: [users])
        let plan = try planner.plan(states: freshStates())
        let step = try #require(plan.steps.first { $0.kind == .createSubscription && $0.sql.contains("from_n1") })
        #expect(step.sql.contains("password=topsecret"))
        #expect(!step.displaySQL.contains("topsecret"))
        #expect(step.displaySQL.contains("password=********"))
    }

    @Test("a slot with a non-filtering plugin is refused, objects of unknown nodes are reported")
    func oddState() throws {
        let planner = Planner(config: try threeNodeConfig(), tables: [users])
        var states = freshStates()
        states["n1"]!.slots["mmlite_shop_n2"] = SlotState(plugin: "pgoutput")
        #expect(throws: PlanError.self) { try planner.plan(states: states) }
        states = freshStates()
        states["n1"]!.slots["mmlite_shop_n9"] = SlotState(plugin: "mmlite")
        let plan = try planner.plan(states: states)
        #expect(plan.notes.contains { $0.contains("mmlite_shop_n9") && $0.contains("not in the config") })
    }

    @Test("schema.* resolves to the tables found")
    func wildcards() {
        let sales1 = QualifiedName(schema: "sales", name: "orders")
        let sales2 = QualifiedName(schema: "sales", name: "items")
        let result = resolveTables([.table(users), .allTables(schema: "sales"), .allTables(schema: "empty")],
                                   existing: [[users, sales1], [sales2]])
        #expect(result.tables == [users, sales2, sales1].sorted())
        #expect(result.unmatched == [.allTables(schema: "empty")])
    }
}
