import MMLiteCore
import PostgresClient

/// Sequence offsets in `status` (docs/sequences.md): read here, judged by `SequencePlanner.problems`.
extension Status {
    func observeSequences(_ state: inout NodeState, _ status: inout NodeStatus, catalog: Catalog, config: MeshConfig) throws {
        state.sequenceOffsets = try catalog.sequenceOffsets(mesh: config.mesh.name)
        state.nodeOffset = try catalog.nodeOffset()
        let tables = resolveTables(config.mesh.tables, existing: [try Catalog.userTables(catalog.connection)]).tables
        state.sequences = try catalog.meshSequences(tables)
        status.sequenceOffset = state.sequenceOffsets.flatMap { SequencePlanner.offset(of: status.name, in: $0) }
        status.sequences = state.sequences
    }

    /// One line per node: its offset, and each sequence's next value.
    func renderSequences(config: MeshConfig, nodes: [NodeStatus], console: Console) {
        guard nodes.contains(where: { $0.sequenceOffset != nil || !$0.sequences.isEmpty }) else { return }
        console.print()
        console.print("Sequences (\(config.mesh.sequences.rawValue), sequence_step \(config.mesh.sequenceStep)):")
        var rows = [["NODE", "OFFSET", "SEQUENCES (next value, increment)"]]
        for node in nodes where node.reachable {
            var seen = Set<QualifiedName>()
            let list = node.sequences.filter { seen.insert($0.sequence).inserted }.map { sequence in
                "\(sequence.sequence.sql) \(Self.nextValue(sequence).map(String.init) ?? "?") +\(sequence.increment)"
            }
            rows.append([node.name, node.sequenceOffset.map(String.init) ?? "-", list.isEmpty ? "-" : list.joined(separator: ", ")])
        }
        printTable(rows, console: console)
    }

    static func nextValue(_ sequence: MeshSequence) -> Int64? {
        guard let last = sequence.lastValue else { return sequence.start }
        let (next, overflow) = last.addingReportingOverflow(sequence.increment)
        return overflow ? nil : next
    }

    static func sequencesJSON(_ sequences: [MeshSequence]) -> JSON {
        .array(sequences.map { sequence in
            .object([
                ("table", .string(sequence.table.sql)),
                ("column", .string(sequence.column)),
                ("sequence", .string(sequence.sequence.sql)),
                ("increment", .integer(sequence.increment)),
                ("last_value", .optional(sequence.lastValue)),
                ("next_value", .optional(nextValue(sequence))),
            ])
        })
    }
}
