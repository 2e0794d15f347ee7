import StreamModel

/// The writer-ID deduplication state of one (writer, segment): the highest event number written and the
/// positions of the most recent batches, so a retried batch is answered with its original position.
struct WriterWindow: Hashable {
    struct Batch: Hashable {
        var firstEventNumber: Int64
        var count: UInt32
        var offset: UInt64
    }

    /// How many recent batches are remembered per (writer, segment).
    static let capacity = 64

    /// Whether `writerID` names a sequenced writer (it starts with `~`): one whose event numbers may jump ahead
    /// between batches, such as the HTTP gateway's writers, which number each request's batch from its
    /// `Eddy-Sequence` (docs/protocol.md, "Exactly-once appends").
    static func isSequenced(_ writerID: String) -> Bool { writerID.utf8.first == UInt8(ascii: "~") }

    var lastEventNumber: Int64
    var batches: [Batch]

    mutating func record(_ batch: Batch) {
        lastEventNumber = batch.firstEventNumber + Int64(batch.count) - 1
        if batches.count == Self.capacity { batches.removeFirst() }
        batches.append(batch)
    }
}

/// One segment's state: the catalog's unit.
struct SegmentState: Hashable {
    /// Spacing of the sparse event-boundary index: a boundary is kept every this many bytes at least.
    static let indexSpacing: UInt64 = 64 << 10

    var start: UInt64 = 0
    var length: UInt64 = 0
    var sealed = false
    /// The LSN of the journal record that created the segment's stream (``SegmentInfo/incarnation``).
    var incarnation: UInt64 = 0
    /// Sorted event boundaries, about ``indexSpacing`` apart; the first is always `start`.
    var boundaries: [UInt64] = [0]
    var writers: [String: WriterWindow] = [:]

    /// The greatest indexed boundary at or below `offset`.
    func boundary(atOrBelow offset: UInt64) -> UInt64 {
        var lo = 0
        var hi = boundaries.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if boundaries[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return boundaries[lo]
    }

    /// Records appended frames of these sizes starting at the current length.
    mutating func extend(frameSizes: [Int]) {
        var at = length
        for size in frameSizes {
            if at - boundaries[boundaries.count - 1] >= Self.indexSpacing { boundaries.append(at) }
            at += UInt64(size)
        }
        length = at
    }

    /// The public state of segment `id`, which this is.
    func info(_ id: SegmentID) -> SegmentInfo {
        SegmentInfo(segment: id, startOffset: start, length: length, sealed: sealed, incarnation: incarnation)
    }

    mutating func truncate(to offset: UInt64) {
        start = offset
        let keep = boundaries.firstIndex { $0 > offset } ?? boundaries.count
        boundaries = [offset] + boundaries[keep...]
    }
}

/// The store's metadata: streams, their segments' lengths, seals, truncation points, boundary indexes and
/// writer windows. The journal thread keeps one copy that runs ahead of the disk; the published copy that
/// readers see changes only after the journal made a batch durable. Both change only through ``apply(_:)``,
/// which recovery uses too, so the three agree by construction.
struct Catalog: Hashable {
    var streams: [StreamName: [SegmentState]] = [:]

    func segment(_ id: SegmentID) throws(EddyError) -> SegmentState {
        guard let segments = streams[id.stream] else {
            throw EddyError(.streamNotFound, "stream '\(id.stream)' does not exist")
        }
        guard Int(id.number) < segments.count else {
            throw EddyError(
                .segmentNotFound, "segment \(id.number) does not exist: '\(id.stream)' has \(segments.count) segments")
        }
        return segments[Int(id.number)]
    }

    func info(_ id: SegmentID) throws(EddyError) -> SegmentInfo {
        let s = try segment(id)
        return s.info(id)
    }

    func info(_ name: StreamName) throws(EddyError) -> StreamInfo {
        guard let segments = streams[name] else {
            throw EddyError(.streamNotFound, "stream '\(name)' does not exist")
        }
        return StreamInfo(
            name: name,
            segments: segments.enumerated().map { i, s in
                s.info(SegmentID(stream: name, number: UInt32(i)))
            })
    }

    /// Applies a record that ``prepare(_:)`` produced or the journal replayed, whose LSN is `lsn`.
    /// - Throws: ``EddyError/Code/corruptData`` when the record does not fit the state (a replayed journal
    ///   that disagrees with the checkpoint).
    mutating func apply(_ record: JournalRecord, lsn: UInt64) throws(EddyError) {
        switch record {
        case .createStream(let name, let count):
            guard streams[name] == nil else { throw EddyError(.corruptData, "journal creates '\(name)' twice") }
            var state = SegmentState()
            state.incarnation = lsn
            streams[name] = Array(repeating: state, count: Int(count))
        case .deleteStream(let name):
            guard streams.removeValue(forKey: name) != nil else {
                throw EddyError(.corruptData, "journal deletes unknown stream '\(name)'")
            }
        case .append(let append):
            try update(append.segment) { (s) throws(EddyError) in
                guard s.length == append.offset, !s.sealed else {
                    throw EddyError(
                        .corruptData,
                        "journal appends to \(append.segment) at \(append.offset), but its length is \(s.length)")
                }
                s.extend(frameSizes: append.frameSizes)
                if !append.writerID.isEmpty {
                    let batch = WriterWindow.Batch(
                        firstEventNumber: append.firstEventNumber, count: UInt32(append.frameSizes.count),
                        offset: append.offset)
                    s.writers[append.writerID, default: WriterWindow(lastEventNumber: -1, batches: [])].record(batch)
                }
            }
        case .seal(let id):
            try update(id) { (s) throws(EddyError) in s.sealed = true }
        case .truncate(let id, let offset):
            try update(id) { (s) throws(EddyError) in
                guard offset >= s.start, offset <= s.length else {
                    throw EddyError(
                        .corruptData, "journal truncates \(id) at \(offset), outside \(s.start)..<\(s.length)")
                }
                s.truncate(to: offset)
            }
        }
    }

    private mutating func update(_ id: SegmentID, _ body: (inout SegmentState) throws(EddyError) -> Void)
        throws(EddyError)
    {
        _ = try segment(id)
        try body(&streams[id.stream]![Int(id.number)])
    }

    /// What the journal thread should do with a request.
    enum Outcome {
        /// Journal this record, then answer.
        case record(JournalRecord)
        /// Answer at once with this acknowledgement: the batch is a retry of one already written.
        case duplicate(AppendAck)
    }

    /// Validates an append against the state; a retry of a remembered batch becomes ``Outcome/duplicate(_:)``.
    func prepare(_ append: AppendRecord) throws(EddyError) -> Outcome {
        let s = try segment(append.segment)
        if !append.writerID.isEmpty, let window = s.writers[append.writerID],
            append.firstEventNumber <= window.lastEventNumber
        {
            let count = UInt32(append.frameSizes.count)
            if let batch = window.batches.first(where: {
                $0.firstEventNumber == append.firstEventNumber && $0.count == count
            }) {
                return .duplicate(
                    AppendAck(segment: append.segment, firstOffset: batch.offset, eventCount: count, duplicate: true))
            }
            throw EddyError(
                .eventNumberConflict,
                "writer '\(append.writerID)' already wrote event numbers up to \(window.lastEventNumber) to "
                    + "\(append.segment); a batch from \(append.firstEventNumber) is not a retry of a recent batch")
        }
        guard !s.sealed else { throw EddyError(.segmentSealed, "segment \(append.segment) is sealed") }
        guard append.firstEventNumber >= 0 || append.writerID.isEmpty else {
            throw EddyError(.invalidArgument, "event numbers start at 0, got \(append.firstEventNumber)")
        }
        // A writer's numbers continue without a gap: a batch past the next number is one that overtook an earlier
        // batch of the writer (sent again on another connection after a failover, while the earlier one waits for
        // its own retry). Written now, it would make that earlier batch a conflict; refused, it is sent again once
        // the earlier one landed.
        // A sequenced writer (its ID starts with `~`) numbers its batches itself, with gaps between them: only
        // the order is checked (a number at or below its last is a retry or a conflict, above).
        let next = (s.writers[append.writerID]?.lastEventNumber ?? -1) + 1
        guard append.writerID.isEmpty || append.firstEventNumber == next || WriterWindow.isSequenced(append.writerID)
        else {
            throw EddyError(
                .eventNumberGap,
                "writer '\(append.writerID)' continues at event number \(next) in \(append.segment), not at "
                    + "\(append.firstEventNumber): an earlier batch of the writer has not landed yet")
        }
        var record = append
        record.offset = s.length
        return .record(.append(record))
    }
}
