import Testing
@testable import MMLiteCore

private let ordersSeq = QualifiedName(schema: "public", name: "users_id_seq")

private func states(_ names: [String], lastValues: [String: Int64] = [:], columnMax: [String: Int64] = [:]) -> [String: NodeState] {
    var result: [String: NodeState] = [:]
    for name in names {
        var state = NodeState(name: name, versionNumber: 150020)
        state.sequences = [MeshSequence(table: users, column: "id", sequence: ordersSeq, lastValue: lastValues[name], columnMax: columnMax[name])]
        result[name] = state
    }
    return result
}

private func config(_ mode: SequenceMode = .nodeOffset, step: Int = 64) throws -> MeshConfig {
    var config = try threeNodeConfig()
    config.mesh.sequences = mode
    config.mesh.sequenceStep = step
    return config
}

private func conversions(_ steps: [Step]) -> [String: Int64] {
    var result: [String: Int64] = [:]
    for step in steps { if case .convertSequence(_, _, _, _, let restart) = step.action { result[step.node] = restart } }
    return result
}

/// Applies sequence steps as the servers would (see `simulate` for the mesh's objects).
private func simulateSequences(_ steps: [Step], on states: inout [String: NodeState]) {
    simulate(Plan(steps: steps), on: &states, tables: [])
}

@Suite("Sequence offsets")
struct SequencePlannerTests {
    @Test("a fresh mesh: offsets in order, every node restarts above the largest value on any node, in its own class; a second run does nothing")
    func fresh() throws {
        let planner = SequencePlanner(config: try config())
        var observed = states(["n1", "n2", "n3"], lastValues: ["n1": 250], columnMax: ["n2": 300])
        let steps = try planner.steps(states: observed, members: ["n1", "n2", "n3"])
        #expect(steps.filter { $0.kind == .recordSequenceOffsets }.count == 3)
        #expect(conversions(steps) == ["n1": 321, "n2": 322, "n3": 323])
        #expect(steps.first { $0.kind == .convertSequence }?.sql == "ALTER SEQUENCE public.users_id_seq INCREMENT BY 64 START WITH 321 RESTART WITH 321")
        simulateSequences(steps, on: &observed)
        #expect(try planner.steps(states: observed, members: ["n1", "n2", "n3"]).isEmpty)
        // Values handed out later stay in the class: still nothing to do.
        observed["n2"]?.sequences[0].lastValue = 322 + 64 * 1000
        #expect(try planner.steps(states: observed, members: ["n1", "n2", "n3"]).isEmpty)
    }

    @Test("offsets come from the nodes, not the file's order; a joining node gets the lowest free one and only it converts")
    func join() throws {
        let planner = SequencePlanner(config: try config())
        var observed = states(["n1", "n2", "n3", "n4"], lastValues: ["n4": 5000])
        let recorded = [SequenceOffset(node: "n3", offset: 1), SequenceOffset(node: "n1", offset: 2), SequenceOffset(node: "n2", offset: 3)]
        for name in ["n1", "n2", "n3"] {
            let offset = try #require(SequencePlanner.offset(of: name, in: recorded))
            observed[name]?.sequenceOffsets = recorded
            observed[name]?.nodeOffset = offset
            observed[name]?.sequences[0] = MeshSequence(table: users, column: "id", sequence: ordersSeq, increment: 64,
                                                        start: Int64(64 + offset), lastValue: Int64(64 * 70 + offset))
        }
        let steps = try planner.steps(states: observed, members: ["n1", "n2", "n3", "n4"])
        let record = steps.filter { $0.kind == .recordSequenceOffsets }
        #expect(record.map(\.node).sorted() == ["n1", "n2", "n3", "n4"])
        guard case .recordSequenceOffsets(_, let offsets, let own)? = record.first(where: { $0.node == "n4" })?.action else {
            Issue.record("no offsets recorded on n4"); return
        }
        #expect(own == 4)
        #expect(offsets.map(\.node) == ["n3", "n1", "n2", "n4"])
        // Above n4's own 5000 and the members' 64 * 70 + offset, in class 4.
        #expect(conversions(steps) == ["n4": 5060])
    }

    @Test("a parted node's offset is never handed out again, also not to the same name")
    func parted() throws {
        let planner = SequencePlanner(config: try config())
        let recorded = [SequenceOffset(node: "n1", offset: 1), SequenceOffset(node: "n2", offset: 2, retired: true), SequenceOffset(node: "n3", offset: 3)]
        let entries = try planner.assign(["n1", "n3", "n5", "n2"], recorded: recorded)
        #expect(SequencePlanner.offset(of: "n5", in: entries) == 4)
        #expect(SequencePlanner.offset(of: "n2", in: entries) == 5)
        #expect(entries.filter { $0.offset == 2 } == [SequenceOffset(node: "n2", offset: 2, retired: true)])
    }

    @Test("registries merge: a retired mark anywhere wins; one offset for two nodes, or two in use for one node, is refused")
    func merge() throws {
        var observed = states(["n1", "n2"])
        observed["n1"]?.sequenceOffsets = [SequenceOffset(node: "n1", offset: 1), SequenceOffset(node: "n9", offset: 2)]
        observed["n2"]?.sequenceOffsets = [SequenceOffset(node: "n1", offset: 1), SequenceOffset(node: "n9", offset: 2, retired: true)]
        #expect(try SequencePlanner.recorded(observed) == [SequenceOffset(node: "n1", offset: 1), SequenceOffset(node: "n9", offset: 2, retired: true)])
        observed["n2"]?.sequenceOffsets = [SequenceOffset(node: "n2", offset: 1)]
        #expect(throws: PlanError.self) { try SequencePlanner.recorded(observed) }
        observed["n2"]?.sequenceOffsets = [SequenceOffset(node: "n1", offset: 3)]
        #expect(throws: PlanError.self) { try SequencePlanner.recorded(observed) }
    }

    @Test("when every offset of the step is used, apply refuses and says to raise sequence_step")
    func exhausted() throws {
        let planner = SequencePlanner(config: try config(step: 2))
        let recorded = [SequenceOffset(node: "n1", offset: 1), SequenceOffset(node: "old", offset: 2, retired: true)]
        do {
            _ = try planner.assign(["n1", "n2"], recorded: recorded)
            Issue.record("assigned an offset that does not exist")
        } catch let error as PlanError {
            #expect(error.message.contains("sequence_step"))
        }
    }

    @Test("a step below an offset in use (also a retired one) is refused: two offsets would share a class")
    func stepTooSmall() throws {
        let recorded = [SequenceOffset(node: "n1", offset: 1), SequenceOffset(node: "gone", offset: 5, retired: true)]
        #expect(throws: PlanError.self) { try SequencePlanner(config: try config(step: 4)).assign(["n1"], recorded: recorded) }
        #expect(try SequencePlanner(config: try config(step: 5)).assign(["n1"], recorded: recorded) == recorded)
    }

    @Test("sequences = none records offsets (for time-ordered IDs) and converts nothing")
    func none() throws {
        let steps = try SequencePlanner(config: try config(.none)).steps(states: states(["n1", "n2"], lastValues: ["n1": 9]), members: ["n1", "n2"])
        #expect(steps.map(\.kind) == [.recordSequenceOffsets, .recordSequenceOffsets])
    }

    @Test("what cannot convert is refused with the way out: a descending sequence, no room below the column type's limit")
    func refused() throws {
        let planner = SequencePlanner(config: try config())
        var observed = states(["n1", "n2"])
        for name in ["n1", "n2"] {
            observed[name]?.sequences[0] = MeshSequence(table: users, column: "id", columnType: "integer", sequence: ordersSeq,
                                                        maxValue: Int64(Int32.max), lastValue: name == "n1" ? Int64(Int32.max) - 10 : 5)
        }
        let result = planner.conversions(node: "n2", offset: 2, states: observed, nodes: ["n1", "n2"])
        guard case .refused(let problem)? = result.first?.1 else { Issue.record("converted past the limit"); return }
        #expect(problem.fix.contains("TYPE bigint"))
        #expect(conversions(try planner.steps(states: observed, members: ["n1", "n2"])).isEmpty)
        observed["n1"]?.sequences[0] = MeshSequence(table: users, column: "id", sequence: ordersSeq, increment: -1, start: -1, minValue: Int64.min, maxValue: -1)
        guard case .refused(let down)? = planner.conversions(node: "n1", offset: 1, states: observed, nodes: ["n1"]).first?.1 else {
            Issue.record("converted a descending sequence"); return
        }
        #expect(down.message.contains("counts down"))
    }

    @Test("restart values: the first one above, in the class; none past Int64.max")
    func restart() throws {
        let planner = SequencePlanner(config: try config())
        #expect(planner.restart(after: 0, offset: 1) == 1)
        #expect(planner.restart(after: 0, offset: 64) == 64)
        #expect(planner.restart(after: 64, offset: 64) == 128)
        #expect(planner.restart(after: 65, offset: 1) == 129)
        #expect(planner.restart(after: Int64.max - 3, offset: 1) == nil)
    }
}
