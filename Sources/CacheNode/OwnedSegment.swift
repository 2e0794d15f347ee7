import NIOCore
import StreamModel
import Synchronization

/// ReadAnswer is what a read returns: the segment's state and bytes from `offset`, as slices of shared buffers.
public struct ReadAnswer: Sendable {
    /// The segment's state as the node knows it.
    public var info: SegmentInfo
    /// Where the bytes start.
    public var offset: UInt64
    /// The bytes, contiguous, in order.
    public var slices: [ByteBuffer]

    /// Bytes in the answer.
    public var count: Int { slices.reduce(0) { $0 + $1.readableBytes } }
}

/// OwnedSegment is what the owner of a segment knows of it beyond the block cache: the segment's state, the
/// growing tail block (assembled from appends that pass through the owner and from incremental store reads,
/// as a list of chunks so that readers holding slices never force a copy), and the tail readers waiting for
/// bytes. All of it under one short lock.
final class OwnedSegment: Sendable {
    /// The bytes `[lo, hi)` of block `index`, in chunks.
    struct Assembly {
        var index: UInt64
        var lo: UInt64
        var hi: UInt64
        var chunks: [ByteBuffer]

        init(index: UInt64, at offset: UInt64) {
            self.index = index
            lo = offset
            hi = offset
            chunks = []
        }

        /// Slices of the bytes from `offset` (which must be in `[lo, hi)`), at most `maxBytes`.
        func slices(from offset: UInt64, maxBytes: Int) -> [ByteBuffer] {
            var out: [ByteBuffer] = []
            var at = lo
            var left = maxBytes
            for chunk in chunks where left > 0 {
                let end = at + UInt64(chunk.readableBytes)
                defer { at = end }
                guard end > offset else { continue }
                let skip = Int(offset > at ? offset - at : 0)
                let take = min(chunk.readableBytes - skip, left)
                out.append(chunk.getSlice(at: chunk.readerIndex + skip, length: take)!)
                left -= take
            }
            return out
        }

        /// The whole assembly as one buffer (one copy, when a block completes).
        func joined() -> ByteBuffer {
            var b = ByteBufferAllocator().buffer(capacity: Int(hi - lo))
            for c in chunks { b.writeImmutableBuffer(c) }
            return b
        }
    }

    /// A tail reader waiting for bytes: a task in ``waitForBytes(beyond:until:)`` or a parked read.
    enum Waiter {
        case task(CheckedContinuation<Void, Never>)
        case parked(ParkedRead)
    }

    struct State {
        var info: SegmentInfo?
        /// The block that holds the known length (the growing tail), as far as the node has its bytes.
        var tail: Assembly?
        /// The last tail block that filled up while its first bytes were missing (the node started following
        /// the segment mid-block): a load of that block reads only the missing front.
        var partial: Assembly?
        var waiters: [Int: Waiter] = [:]
        var nextWaiter = 0
        /// Whether a length wait against the store is running for this segment.
        var watching = false
        /// Appends this owner has sent to the store and not yet seen acknowledged.
        var appending = 0
        /// Tasks waiting for appends in flight to land (see ``awaitAppends(reaching:until:)``), with the length
        /// they wait for.
        var settles: [Int: (target: UInt64, c: CheckedContinuation<Void, Never>)] = [:]
    }

    let id: SegmentID
    let geometry: BlockGeometry
    let state = Mutex(State())

    init(id: SegmentID, geometry: BlockGeometry) {
        self.id = id
        self.geometry = geometry
    }

    var info: SegmentInfo? { state.withLock { $0.info } }

    /// Bytes from `offset` out of the tail assembly, if it has them.
    func tailSlices(from offset: UInt64, maxBytes: Int) -> ReadAnswer? {
        state.withLock { s in
            guard let info = s.info, let t = s.tail, t.lo <= offset, offset < t.hi else { return nil }
            return ReadAnswer(info: info, offset: offset, slices: t.slices(from: offset, maxBytes: maxBytes))
        }
    }

    /// Takes a newer state from the store: the length only grows, a seal or truncation sticks.
    /// - Returns: the waiters to wake (all of them when something changed).
    func learn(_ newer: SegmentInfo) -> Wakeup {
        state.withLock { s in
            let merged: SegmentInfo
            if let old = s.info, old.incarnation == newer.incarnation {
                merged = SegmentInfo(
                    segment: id, startOffset: max(old.startOffset, newer.startOffset),
                    length: max(old.length, newer.length), sealed: old.sealed || newer.sealed,
                    incarnation: old.incarnation)
            } else {
                merged = newer
            }
            let changed = merged != s.info
            s.info = merged
            guard changed else { return .none }
            var wake = Self.takeWaiters(&s)
            wake.tasks += Self.takeSettles(&s) { $0 <= merged.length }
            return wake
        }
    }

    /// Adds bytes known to sit at `[offset, offset + count)`: from an append the owner passed to the store, or
    /// from an incremental store read. Bytes that continue the tail extend it; bytes already held are skipped;
    /// bytes past a gap start a new tail.
    /// - Returns: blocks that became full and complete (to insert into the cache), and the waiters to wake.
    func extend(at offset: UInt64, _ bytes: ByteBuffer) -> (full: [(UInt64, ByteBuffer)], wake: Wakeup) {
        guard bytes.readableBytes > 0 else { return ([], .none) }
        return state.withLock { s in
            var full: [(UInt64, ByteBuffer)] = []
            var at = offset
            var rest = bytes
            if let t = s.tail, at < t.hi {
                // Bytes the tail has already: skip them (the segment is immutable, they are the same).
                let skip = Int(min(UInt64(rest.readableBytes), t.hi - at))
                rest.moveReaderIndex(forwardBy: skip)
                at += UInt64(skip)
            }
            while rest.readableBytes > 0 {
                let index = geometry.index(containing: at)
                if s.tail == nil || s.tail!.index != index || s.tail!.hi != at {
                    s.tail = Assembly(index: index, at: at)
                }
                let blockEnd = geometry.range(ofBlock: index).upperBound
                let take = Int(min(UInt64(rest.readableBytes), blockEnd - at))
                s.tail!.chunks.append(Self.owned(rest.readSlice(length: take)!))
                s.tail!.hi += UInt64(take)
                at += UInt64(take)
                if s.tail!.hi == blockEnd {
                    let t = s.tail!
                    if t.lo == blockEnd - geometry.blockSize {
                        full.append((t.index, t.joined()))
                    } else {
                        s.partial = t
                    }
                    s.tail = Assembly(index: index + 1, at: blockEnd)
                }
            }
            if let info = s.info, at > info.length {
                s.info = SegmentInfo(
                    segment: id, startOffset: info.startOffset, length: at, sealed: info.sealed,
                    incarnation: info.incarnation)
            }
            let known = max(at, s.info?.length ?? 0)
            var wake = Self.takeWaiters(&s)
            wake.tasks += Self.takeSettles(&s) { $0 <= known }
            return (full, wake)
        }
    }

    /// Notes an append on its way to the store through this owner: its bytes come back with its acknowledgement,
    /// so a store read must not fetch them meanwhile. Pair with ``appendLanded()``.
    func appendSent() { state.withLock { $0.appending += 1 } }

    /// Notes an append answered (acknowledged, refused or failed), after its bytes were added.
    func appendLanded() {
        state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.appending -= 1
            return s.appending == 0 ? Self.takeSettles(&s) { _ in true } : []
        }.forEach { $0.resume() }
    }

    /// Waits while appends sent through this owner are in flight, until the known length reaches `target`, none
    /// is in flight, or `deadline` passes: the bytes the store holds past the known length are then most likely
    /// on their way in an acknowledgement, and reading them from the store would read them twice.
    func awaitAppends(reaching target: UInt64, until deadline: ContinuousClock.Instant) async {
        // The usual case (no append in flight) returns without suspending.
        guard state.withLock({ $0.appending > 0 && ($0.info?.length ?? 0) < target }) else { return }
        await suspend(until: deadline) { s, id, c in
            guard s.appending > 0, (s.info?.length ?? 0) < target else { return false }
            s.settles[id] = (target, c)
            return true
        } take: { s, id in
            s.settles.removeValue(forKey: id)?.c
        }
    }

    private static func takeSettles(_ s: inout State, _ done: (UInt64) -> Bool) -> [CheckedContinuation<Void, Never>] {
        guard !s.settles.isEmpty else { return [] }
        let ready = s.settles.filter { done($0.value.target) }
        for id in ready.keys { s.settles.removeValue(forKey: id) }
        return ready.values.map(\.c)
    }

    /// `chunk`, copied into a buffer of its own size when it is a slice of a larger buffer (an append's frames are
    /// a slice of the connection's receive buffer): a tail block assembled from a thousand small appends would
    /// otherwise keep a thousand receive buffers alive, outside the cache budget. Copying a small append costs
    /// little; a large one usually fills its buffer and is kept as it is.
    private static func owned(_ chunk: ByteBuffer) -> ByteBuffer {
        guard chunk.storageCapacity > chunk.readableBytes + chunk.readableBytes / 4 else { return chunk }
        var own = ByteBufferAllocator().buffer(capacity: chunk.readableBytes)
        own.writeImmutableBuffer(chunk)
        return own
    }

    /// Puts bytes `[offset, offset + count)` in front of the tail or the partial block they precede.
    /// - Returns: the block, if that completed one.
    func prepend(at offset: UInt64, _ bytes: ByteBuffer) -> (UInt64, ByteBuffer)? {
        state.withLock { s in
            let end = offset + UInt64(bytes.readableBytes)
            if var t = s.tail, t.lo == end {
                t.chunks.insert(Self.owned(bytes), at: 0)
                t.lo = offset
                s.tail = t
                return nil
            }
            if var p = s.partial, p.lo == end {
                p.chunks.insert(Self.owned(bytes), at: 0)
                p.lo = offset
                s.partial = nil
                return p.lo == geometry.range(ofBlock: p.index).lowerBound ? (p.index, p.joined()) : nil
            }
            return nil
        }
    }

    /// Where the node's bytes of block `index` begin, if it holds a tail or partial assembly of it.
    func assemblyStart(ofBlock index: UInt64) -> UInt64? {
        state.withLock { s in
            if let t = s.tail, t.index == index, t.hi > t.lo { return t.lo }
            if let p = s.partial, p.index == index { return p.lo }
            return nil
        }
    }

    /// The end of the tail assembly's bytes when it holds block `index`.
    func tailEnd(ofBlock index: UInt64) -> UInt64? {
        state.withLock { s in
            guard let t = s.tail, t.index == index, t.hi > t.lo else { return nil }
            return t.hi
        }
    }

    /// Waits until bytes past `offset` are known, the segment changes, or `deadline` passes.
    func waitForBytes(beyond offset: UInt64, until deadline: ContinuousClock.Instant) async {
        await suspend(until: deadline) { s, id, c in
            if let info = s.info, info.length > offset || info.sealed { return false }
            s.waiters[id] = .task(c)
            return true
        } take: { s, id in
            if case .task(let c) = s.waiters.removeValue(forKey: id) { return c }
            return nil
        }
    }

    /// Suspends until whoever `register` handed the continuation to resumes it, or `deadline` passes.
    /// - Parameters:
    ///   - register: under the lock, files the continuation under the ID; returns false when there is nothing
    ///     to wait for (then it must not keep the continuation).
    ///   - take: under the lock, takes the continuation back if it is still filed.
    private func suspend(
        until deadline: ContinuousClock.Instant,
        register: @escaping @Sendable (inout State, Int, CheckedContinuation<Void, Never>) -> Bool,
        take: @escaping @Sendable (inout State, Int) -> CheckedContinuation<Void, Never>?
    ) async {
        let id = state.withLock { s in
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    if !self.state.withLock({ register(&$0, id, c) }) { c.resume() }
                }
            }
            group.addTask {
                try? await Task.sleep(until: deadline, clock: .continuous)
                self.state.withLock { take(&$0, id) }?.resume()
            }
            await group.next()
            group.cancelAll()
        }
        // Whichever finished first, make sure the other half is not left behind.
        state.withLock { take(&$0, id) }?.resume()
    }

    /// Parks a tail read at `offset` (the known end): `read` is woken when bytes or a new state arrive.
    /// - Returns: the waiter's ID (for ``unpark(_:)``), or nil when there is something to answer already (bytes
    ///   past `offset`, a seal, or no known state): then nothing was parked.
    func park(at offset: UInt64, _ read: ParkedRead) -> Int? {
        state.withLock { s in
            guard let info = s.info, info.length <= offset, !info.sealed else { return nil }
            defer { s.nextWaiter += 1 }
            s.waiters[s.nextWaiter] = .parked(read)
            return s.nextWaiter
        }
    }

    /// Takes back a parked read that has not been woken; false if it was woken (or taken back) already.
    func unpark(_ id: Int) -> Bool {
        state.withLock { $0.waiters.removeValue(forKey: id) != nil }
    }

    /// Tail readers waiting now.
    var waiterCount: Int { state.withLock { $0.waiters.count } }

    /// Whether a length wait against the store is running for this segment.
    var isWatching: Bool { state.withLock { $0.watching } }

    /// Marks the store watch as running; false if one is running already.
    func startWatching() -> Bool {
        state.withLock { s in
            guard !s.watching else { return false }
            s.watching = true
            return true
        }
    }

    /// Ends the store watch unless readers still wait; returns whether it ended.
    func stopWatchingIfIdle() -> Bool {
        state.withLock { s in
            guard s.waiters.isEmpty || (s.info?.sealed ?? false) else { return false }
            s.watching = false
            return true
        }
    }

    /// Ends the store watch whatever waits.
    func stopWatching() { state.withLock { $0.watching = false } }

    /// Wakes every waiter (shutdown, a deleted stream).
    func wakeAll() {
        state.withLock { Self.takeWaiters(&$0) }.fire()
    }

    private static func takeWaiters(_ s: inout State) -> Wakeup {
        defer { s.waiters.removeAll(keepingCapacity: true) }
        var w = Wakeup()
        for waiter in s.waiters.values {
            switch waiter {
            case .task(let c): w.tasks.append(c)
            case .parked(let p): w.parked.append(p)
            }
        }
        return w
    }
}
