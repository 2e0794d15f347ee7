import CacheCore
import Coalescing
import Foundation
import HashRing
import Logging
import Membership
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol
import WriteBack

/// Reads: the owner's path (cache, coalesced store loads, cold reads, read-ahead, the tail), and parked tail reads.
extension NodeCore {
    // MARK: - Reads

    /// Reads up to `maxBytes` of `segment` from `offset` (within one block), waiting up to `wait` at the tail.
    public func read(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?,
        forwardedBy view: RingView? = nil
    ) async throws(EddyError) -> ReadAnswer {
        counters.reads.add(1, ordering: .relaxed)
        let wait = min(wait, configuration.maxWait)
        let maxBytes = max(0, min(maxBytes, Int(geometry.blockSize)))
        return try await viaOwner(
            segment, forwardedBy: view,
            local: { () throws(EddyError) in
                try await ownerRead(segment, offset: offset, maxBytes: maxBytes, wait: wait, reader: reader)
            },
            remote: { (owner) throws(EddyError) in
                try await nonOwnerRead(segment, owner: owner, offset: offset, maxBytes: maxBytes, wait: wait)
            })
    }

    /// Serves a read a peer forwarded: checks its ring view, then reads as the owner.
    func readForwarded(
        _ view: RingView, _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?
    ) async throws(EddyError) -> ReadAnswer {
        try checkView(view)
        return try await read(
            segment, offset: offset, maxBytes: maxBytes, wait: wait, reader: reader, forwardedBy: view)
    }

    /// Parks a tail read on `eventLoop` instead of running a task for it, when it is one: a read with a wait at
    /// the known end of a segment this node owns (answered from the tail assembly when bytes arrive, or empty at
    /// its deadline), or at the end a non-owner knows of (joined to one shared forward per owner, offset and
    /// wait). A fan-out then costs one hop per event loop, not a task per reader.
    /// - Returns: false when the read is not such a read (run it through ``read(_:offset:maxBytes:wait:reader:forwardedBy:)``);
    ///   true when `respond` will be called on `eventLoop`, exactly once: with the answer, an error, or
    ///   ``ParkedRead/Outcome/changed`` (the segment changed in a way a parked read does not handle: run the read
    ///   through the full path).
    func parkRead(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?,
        forwardedBy view: RingView?, on eventLoop: any EventLoop,
        _ respond: @escaping @Sendable (ParkedRead.Outcome) -> Void
    ) -> Bool {
        let wait = min(wait, configuration.maxWait)
        guard wait > .zero else { return false }
        let maxBytes = max(0, min(maxBytes, Int(geometry.blockSize)))
        if let view {
            do throws(EddyError) {
                try checkView(view)
            } catch {
                counters.reads.add(1, ordering: .relaxed)
                eventLoop.execute { respond(.failed(error)) }
                return true
            }
        }
        guard let owner = view == nil ? knownOwner(of: segment) : me else { return false }
        if owner == me {
            return parkOwned(
                segment, offset: offset, maxBytes: maxBytes, wait: wait, reader: reader, on: eventLoop, respond)
        }
        return parkForward(
            segment, owner: owner, offset: offset, maxBytes: maxBytes, wait: wait, on: eventLoop, respond)
    }

    /// The segment a subscription at `offset` can follow without a read: one this node owns and knows the state
    /// of, with `offset` not truncated away. Whether `offset` is at its end (nothing to answer yet) is the
    /// segment's to say when the waiter is filed (``OwnedSegment/park(at:_:)``). Nil: read through ``parkRead``.
    func followableTail(_ segment: SegmentID, at offset: UInt64) -> OwnedSegment? {
        guard knownOwner(of: segment) == me else { return nil }
        return ownedSegment(segment, readableAt: offset)?.segment
    }

    /// An owned segment whose known state has `offset` at or past its start, with that state.
    private func ownedSegment(_ segment: SegmentID, readableAt offset: UInt64) -> (
        segment: OwnedSegment, info: SegmentInfo
    )? {
        guard let seg = segments.withLock({ $0[segment] }), let info = seg.info, offset >= info.startOffset else {
            return nil
        }
        return (seg, info)
    }

    /// Counts a read waiting at the tail of `seg` (a parked read or a following subscription), and keeps the
    /// store's length wait running: it hears of writes that bypass the ring, and of seals.
    func followed(_ seg: OwnedSegment) {
        counters.reads.add(1, ordering: .relaxed)
        counters.tailWaits.add(1, ordering: .relaxed)
        counters.parkedReads.add(1, ordering: .relaxed)
        watch(seg)
    }

    /// Books an answer out of the tail block for `reader`: a hit on that block.
    private func tailHit(_ answer: ReadAnswer, reader: ReaderState?) {
        noteLookup(
            answer.info.segment, block: geometry.index(containing: answer.offset), info: answer.info, reader: reader,
            tail: true, first: true)
        countLookup(hit: true)
    }

    /// Books a delivery of `answer` (tail bytes) pushed to a following subscription.
    func deliveredTail(_ answer: ReadAnswer, reader: ReaderState?) {
        tailHit(answer, reader: reader)
        counters.bytesServed.add(answer.count, ordering: .relaxed)
        counters.tailPushes.add(1, ordering: .relaxed)
    }

    func parkOwned(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?,
        on eventLoop: any EventLoop, _ respond: @escaping @Sendable (ParkedRead.Outcome) -> Void
    ) -> Bool {
        guard let (seg, info) = ownedSegment(segment, readableAt: offset) else { return false }
        // Parking runs on the connection's event loop, and so do the wake and the deadline.
        let timers = NIOLoopBound(LoopTimers.current(on: eventLoop), eventLoop: eventLoop)
        let timer = NIOLoopBoundBox<LoopTimers.Token?>(nil, eventLoop: eventLoop)
        let parked = ParkedRead(eventLoop: eventLoop) { _ in
            if let t = timer.value { timers.value.cancel(t) }
            guard let a = seg.tailSlices(from: offset, maxBytes: maxBytes) else { return respond(.changed) }
            self.tailHit(a, reader: reader)
            respond(.answer(a))
        }
        guard let id = seg.park(at: offset, parked) else { return false }
        followed(seg)
        timer.value = timers.value.schedule(in: TimeAmount(wait)) {
            guard seg.unpark(id) else { return }
            respond(.answer(ReadAnswer(info: seg.info ?? info, offset: offset, slices: [])))
        }
        return true
    }

    func parkForward(
        _ segment: SegmentID, owner: String, offset: UInt64, maxBytes: Int, wait: Duration,
        on eventLoop: any EventLoop, _ respond: @escaping @Sendable (ParkedRead.Outcome) -> Void
    ) -> Bool {
        guard let hint = hints.withLock({ $0[segment] }), offset >= hint.length, offset >= hint.startOffset,
            !hint.sealed
        else { return false }
        let key = ForwardKey(
            owner: owner, segment: segment, offset: offset, maxBytes: UInt32(maxBytes),
            waitMilliseconds: UInt32(clamping: Int64(wait.inSeconds * 1000)))
        let parked = ParkedRead(eventLoop: eventLoop, wake: respond)
        let first = parkedForwards.withLock { p -> Bool in
            if p[key] != nil {
                p[key]!.append(parked)
                return false
            }
            p[key] = [parked]
            return true
        }
        counters.reads.add(1, ordering: .relaxed)
        counters.parkedReads.add(1, ordering: .relaxed)
        guard first else {
            counters.coalescedForwards.add(1, ordering: .relaxed)
            return true
        }
        Task {
            let outcome: ParkedRead.Outcome
            do throws(EddyError) {
                outcome = .answer(try await self.forwardRead(key))
            } catch  where error.code == .staleEpoch || error.code == .unavailable {
                outcome = .changed  // the full path refreshes the ring view and routes again
            } catch {
                outcome = .failed(error)
            }
            ParkedRead.wake(self.parkedForwards.withLock { $0.removeValue(forKey: key) ?? [] }, outcome)
        }
        return true
    }

    func ownedSegment(_ id: SegmentID) -> OwnedSegment {
        segments.withLock { s in
            if let o = s[id] { return o }
            let o = OwnedSegment(id: id, geometry: geometry)
            s[id] = o
            return o
        }
    }

    /// Inserts blocks that filled up and wakes the tail readers they satisfy.
    func absorb(_ result: (full: [(UInt64, ByteBuffer)], wake: Wakeup), _ segment: SegmentID) {
        for (index, bytes) in result.full { cache.insert(BlockID(segment: segment, index: index), buffer: bytes) }
        result.wake.fire()
    }

    func ownerRead(
        _ segment: SegmentID, offset: UInt64, maxBytes: Int, wait: Duration, reader: ReaderState?
    ) async throws(EddyError) -> ReadAnswer {
        let seg = ownedSegment(segment)
        let deadline = ContinuousClock.now + wait
        var askedStore = false
        var missed = false
        while true {
            let info: SegmentInfo
            if let known = seg.info { info = known } else { info = try await refreshInfo(seg) }
            guard offset >= info.startOffset else {
                guard let writeBack else {
                    throw EddyError(
                        .truncated, "offset \(offset) of \(segment) is below its truncation point \(info.startOffset)")
                }
                return try await coldRead(seg, writeBack, offset: offset, maxBytes: maxBytes, info: info)
            }
            if offset < info.length {
                let index = geometry.index(containing: offset)
                let full = geometry.isFull(block: index, segmentLength: info.length)
                noteLookup(segment, block: index, info: info, reader: reader, tail: wait > .zero, first: !missed)
                if let a = seg.tailSlices(from: offset, maxBytes: maxBytes) {
                    countLookup(hit: !missed)
                    return a
                }
                let blockRange = geometry.range(ofBlock: index)
                if blockRange.lowerBound < info.startOffset {
                    // The block's front is truncated: it cannot be cached whole. Read what is asked, once.
                    let end = min(blockRange.upperBound, info.length)
                    let r = try await storeRead(segment, from: offset, count: min(maxBytes, Int(end - offset)))
                    seg.learn(r.info).fire()
                    countLookup(hit: false)
                    return ReadAnswer(
                        info: seg.info ?? r.info, offset: offset, slices: r.data.readableBytes > 0 ? [r.data] : [])
                }
                if full {
                    let block = try await fullBlock(seg, index, missed: &missed)
                    countLookup(hit: !missed)
                    readAhead(seg, after: index, info: info, reader: reader)
                    let skip = Int(offset - blockRange.lowerBound)
                    let take = min(maxBytes, block.readableBytes - skip)
                    guard take > 0 else { return ReadAnswer(info: info, offset: offset, slices: []) }
                    return ReadAnswer(
                        info: info, offset: offset,
                        slices: [block.getSlice(at: block.readerIndex + skip, length: take)!])
                }
                // In the growing tail block, but the node does not hold those bytes: read them incrementally.
                missed = true
                try await fillTail(seg, index: index, for: offset)
                continue
            }
            if offset > info.length && askedStore {
                throw EddyError(.offsetOutOfRange, "offset \(offset) is past the end of \(segment) (\(info.length))")
            }
            if info.sealed && offset == info.length {
                return ReadAnswer(info: info, offset: offset, slices: [])
            }
            if !askedStore && !(wait > .zero && offset == info.length && seg.isWatching) {
                // The node's length may lag writes that bypassed it: ask the store once for what is new. A tail
                // read at the known end skips this while the segment's length wait runs: that wait hears of
                // such writes and wakes the readers.
                askedStore = true
                try await fetchTail(seg, reaching: offset + 1)
                continue
            }
            guard ContinuousClock.now < deadline else { return ReadAnswer(info: info, offset: offset, slices: []) }
            counters.tailWaits.add(1, ordering: .relaxed)
            watch(seg)
            await seg.waitForBytes(beyond: offset, until: deadline)
            if Task.isCancelled { throw EddyError(.shuttingDown, "the request was cancelled") }
        }
    }

    /// Tells the reader's state, the eviction policy (with reader hints) and the access trace that `reader`
    /// reads block `index` (`first`: the first look of this request, not a look again after a load). Tail lookups
    /// of the block a reader's last tail lookup was of reach only the reader's state.
    func noteLookup(
        _ segment: SegmentID, block index: UInt64, info: SegmentInfo, reader: ReaderState?, tail: Bool, first: Bool
    ) {
        let again = reader?.record(segment, block: index, tail: tail) ?? false
        // A follower reads the growing tail block in many small pieces: the what-if and the trace count its
        // block once, as the one block request it is for a cache (every policy hits the pieces after the first).
        guard first, !again else { return }
        let full = geometry.isFull(block: index, segmentLength: info.length)
        if configuration.readerHints, let reader {
            cache.readerMoved(reader.id, to: BlockID(segment: segment, index: index), tail: tail || !full)
        }
        guard trace != nil || whatIf != nil else { return }
        let size = full ? Int(geometry.blockSize) : Int(info.length - geometry.range(ofBlock: index).lowerBound)
        let ordinal = ordinals.ordinal(of: segment)
        trace?.record(ordinal, block: index, size: size, reader: reader?.id ?? 0, tail: tail || !full)
        whatIf?.record(BlockKey(segment: ordinal, block: index & BlockKey.maxBlock).rawValue, size: Int64(size))
    }

    func countLookup(hit: Bool) {
        if hit { counters.hits.add(1, ordering: .relaxed) } else { counters.misses.add(1, ordering: .relaxed) }
    }

    /// The bytes of full block `index`: from the cache, from a partial assembly completed by its missing front,
    /// or loaded from the store once however many readers wait.
    func fullBlock(_ seg: OwnedSegment, _ index: UInt64, missed: inout Bool) async throws(EddyError)
        -> ByteBuffer
    {
        let id = BlockID(segment: seg.id, index: index)
        if let b = try cache.buffer(id) { return b }
        missed = true
        let range = geometry.range(ofBlock: index)
        do {
            let (bytes, joined) = try await blockLoads.run(id) {
                if let b = try self.cache.buffer(id) { return b }
                if let lo = seg.assemblyStart(ofBlock: index), lo > range.lowerBound, lo < range.upperBound {
                    // The node has the block's end already: read only its front.
                    if let whole = try await self.loadFront(seg, index, before: lo) { return whole }
                }
                return try await self.loadWholeBlock(seg, index)
            }
            if joined { counters.coalesced.add(1, ordering: .relaxed) }
            return bytes
        } catch {
            throw Self.typed(error)
        }
    }

    /// A read below the store's truncation point: the block from object storage through the cache (cached when
    /// it was flushed whole), loaded once however many readers ask.
    func coldRead(
        _ seg: OwnedSegment, _ writeBack: WriteBack, offset: UInt64, maxBytes: Int, info: SegmentInfo
    ) async throws(EddyError) -> ReadAnswer {
        let index = geometry.index(containing: offset)
        let id = BlockID(segment: seg.id, index: index)
        let blockStart = geometry.range(ofBlock: index).lowerBound
        var block: ByteBuffer
        if let cached = try cache.buffer(id) {
            block = cached
            countLookup(hit: true)
        } else {
            let blockSize = Int(geometry.blockSize)
            do {
                (block, _) = try await blockLoads.run(id) {
                    if let b = try self.cache.buffer(id) { return b }
                    let bytes = try await writeBack.coldBlock(seg.id, index: index)
                    guard bytes.readableBytes == blockSize else { return bytes }
                    return self.cache.admit(id, buffer: bytes) ?? bytes
                }
            } catch {
                throw Self.typed(error)
            }
            countLookup(hit: false)
        }
        let skip = Int(offset - blockStart)
        guard skip < block.readableBytes else {
            throw EddyError(.truncated, "offset \(offset) of \(seg.id) is neither in the store nor flushed")
        }
        let take = min(maxBytes, block.readableBytes - skip)
        return ReadAnswer(
            info: info, offset: offset, slices: [block.getSlice(at: block.readerIndex + skip, length: take)!])
    }

    /// One store read of all of block `index`, cached when the block is full.
    func loadWholeBlock(_ seg: OwnedSegment, _ index: UInt64) async throws(EddyError) -> ByteBuffer {
        let blockSize = Int(geometry.blockSize)
        let r = try await storeRead(seg.id, from: geometry.range(ofBlock: index).lowerBound, count: blockSize)
        seg.learn(r.info).fire()
        guard r.data.readableBytes == blockSize else { return r.data }
        // Answer from the cached copy: the read's own buffer is the connection's receive buffer.
        return cache.admit(BlockID(segment: seg.id, index: index), buffer: r.data) ?? r.data
    }

    /// Starts loads of the next full blocks when `reader` reads `segment` sequentially (a catch-up scan), so a
    /// scan has several store reads outstanding.
    func readAhead(_ seg: OwnedSegment, after index: UInt64, info: SegmentInfo, reader: ReaderState?) {
        // Blocks read ahead must live until their reader gets there: in a cache of fewer than 16 blocks per block
        // read ahead they would be evicted first and read twice (a promote/evict loop), so the depth shrinks.
        let depth = min(configuration.readAhead, Int(cache.configuration.capacity / Int64(geometry.blockSize) / 16))
        guard depth > 0, let reader, reader.isSequential(seg.id) else { return }
        for next in (index + 1)...(index + UInt64(depth)) {
            guard geometry.isFull(block: next, segmentLength: info.length) else { break }
            let id = BlockID(segment: seg.id, index: next)
            guard !cache.contains(id) else { continue }
            // The job runs a little later, in a task of its own: a demand load of the block may have cached it
            // meanwhile (and left the single-flight registry), and must not be followed by a second store read.
            let load: @Sendable () async throws -> ByteBuffer = {
                if let cached = try self.cache.buffer(id) { return cached }
                return try await self.loadWholeBlock(seg, next)
            }
            if blockLoads.start(id, load) {
                counters.readAheads.add(1, ordering: .relaxed)
            }
        }
    }

    /// Reads the bytes of tail block `index` the node lacks: the front before its assembly (when `offset` is
    /// there), else from the assembly's end (or the block's start) to the block's end.
    func fillTail(_ seg: OwnedSegment, index: UInt64, for offset: UInt64) async throws(EddyError) {
        if let lo = seg.assemblyStart(ofBlock: index), offset < lo {
            _ = try await loadFront(seg, index, before: lo)
            return
        }
        try await readTail(seg, from: seg.tailEnd(ofBlock: index) ?? geometry.range(ofBlock: index).lowerBound)
    }

    /// Reads the front of block `index` up to `lo`, where the node's assembly of it starts (the node began
    /// following the segment mid-block), once for all callers; caches the block if that completes it.
    /// - Returns: the block, to serve from, when this read completed it.
    func loadFront(_ seg: OwnedSegment, _ index: UInt64, before lo: UInt64) async throws(EddyError)
        -> ByteBuffer?
    {
        let start = geometry.range(ofBlock: index).lowerBound
        return try await sharedRead(seg, from: start) { () throws(EddyError) in
            let r = try await self.storeRead(seg.id, from: start, count: Int(lo - start))
            guard let whole = seg.prepend(at: start, r.data) else { return nil }
            return self.cache.admit(BlockID(segment: seg.id, index: whole.0), buffer: whole.1) ?? whole.1
        }
    }

    /// Reads what the store has past the node's known length, up to the end of that block. Bytes of appends
    /// passing through this node come with their acknowledgements: while such appends are in flight it first
    /// waits for them to bring the known length to `target`, and reads from the store only if they did not.
    func fetchTail(_ seg: OwnedSegment, reaching target: UInt64) async throws(EddyError) {
        await seg.awaitAppends(reaching: target, until: .now + configuration.requestTimeout)
        guard let info = seg.info, info.length < target else { return }
        try await readTail(seg, from: info.length)
    }

    /// Reads from `from` to the end of its block into the tail assembly (one read in flight per segment and
    /// offset), learning the segment's state on the way, and wakes the tail readers.
    func readTail(_ seg: OwnedSegment, from: UInt64) async throws(EddyError) {
        let blockEnd = geometry.range(ofBlock: geometry.index(containing: from)).upperBound
        _ = try await sharedRead(seg, from: from) { () throws(EddyError) in
            let r = try await self.storeRead(seg.id, from: from, count: Int(blockEnd - from))
            let wake = seg.learn(r.info)
            self.absorb(seg.extend(at: from, r.data), seg.id)
            wake.fire()
            return nil
        }
    }

    /// One store read per (segment, start offset) at a time: a request for the same range joins it and gets the
    /// same result.
    func sharedRead(
        _ seg: OwnedSegment, from: UInt64, _ body: @escaping @Sendable () async throws(EddyError) -> ByteBuffer?
    ) async throws(EddyError) -> ByteBuffer? {
        do {
            let (result, joined) = try await storeReads.run(RangeKey(segment: seg.id, from: from)) {
                try await body()
            }
            if joined { counters.coalesced.add(1, ordering: .relaxed) }
            return result
        } catch {
            throw Self.typed(error)
        }
    }

    /// Keeps one length wait against the store running for `seg` while tail readers wait there: it learns of
    /// bytes written past the ring (and of seals) and reads them once for all readers. A regional node subscribes
    /// at its home node instead (``subscribeUpstream(_:)``), and waits for lengths only when the home node
    /// refuses another subscription on its connection.
    func watch(_ seg: OwnedSegment) {
        guard seg.startWatching() else { return }
        Task {
            if configuration.isRegional, await subscribeUpstream(seg) { return }
            await waitForLength(seg)
        }
    }

    /// The length wait's loop, until a whole round passed with no reader waiting (or the segment is sealed).
    private func waitForLength(_ seg: OwnedSegment) async {
        let wait: UInt32 = 5000
        var idle = false
        while true {
            // Readers come back right after a wake-up: the wait ends after a whole round with none waiting
            // (or once the segment is sealed).
            if idle || seg.info?.sealed == true, seg.stopWatchingIfIdle() { return }
            idle = seg.waiterCount == 0
            guard let info = seg.info else { return seg.stopWatching() }
            do {
                let r = try await store.send(
                    .read(segment: seg.id, offset: info.length, maxBytes: 0, waitMilliseconds: wait),
                    timeout: configuration.requestTimeout + .milliseconds(Int64(wait)))
                guard case .readResult(_, let now, _) = r else { continue }
                if now.length > (seg.info?.length ?? 0) { try await fetchTail(seg, reaching: now.length) }
                seg.learn(now).fire()
            } catch {
                // The store is away: waiters get empty answers at their deadlines; try again shortly.
                seg.wakeAll()
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// A regional node's watch: one subscription per segment at the home ring's node in use, which pushes the
    /// segment's bytes as they arrive there (one WAN crossing per delivery, no request). Pushed bytes go into
    /// the tail assembly (bytes it holds already are skipped) and wake the tail readers. The subscription starts
    /// at the node's known length and starts again there after a failure (the home node gone: the upstream fails
    /// over) or once the upstream moved back to its zone; it ends when no reader has waited for a heartbeat
    /// interval, or at the end of a sealed segment.
    /// - Returns: true when the watch is over; false when the home node refused the subscription (its
    ///   connection holds as many as it takes, or it has none): the caller waits for lengths instead.
    func subscribeUpstream(_ seg: OwnedSegment) async -> Bool {
        var lastWaiter = ContinuousClock.now
        while true {
            guard let info = seg.info else {
                seg.stopWatching()
                return true
            }
            let idle = ContinuousClock.now - lastWaiter >= Self.upstreamHeartbeat
            if info.sealed || idle, seg.stopWatchingIfIdle() { return true }
            let started: (subscription: Subscription, client: StoreClient)
            do {
                started = try await store.subscribe(
                    seg.id, from: info.length, window: 4 << 20, heartbeat: Self.upstreamHeartbeat,
                    timeout: configuration.requestTimeout)
            } catch {
                seg.wakeAll()
                if error.code == .shuttingDown {
                    seg.stopWatching()
                    return true
                }
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            counters.upstreamSubscriptions.add(1, ordering: .relaxed)
            let ended = await follow(seg, started, lastWaiter: &lastWaiter)
            counters.upstreamSubscriptions.subtract(1, ordering: .relaxed)
            switch ended {
            case .idle: return true
            case .moved: continue
            case .failed(let error) where error.code == .overloaded || error.code == .unknownMessageType:
                return false
            case .failed(let error):
                if error.code == .connectionFailed || error.code == .timedOut { store.abandon(started.client) }
                // Waiters get empty answers at their deadlines meanwhile; try again shortly.
                seg.wakeAll()
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// How often a home node says it is alive to a regional node's subscription with nothing to push; also how
    /// long such a subscription outlives the last tail reader.
    static let upstreamHeartbeat = Duration.seconds(5)

    /// Why an upstream subscription ended.
    enum UpstreamEnd {
        /// No reader waited for a heartbeat interval (or the sealed segment's end came): the watch is over.
        case idle
        /// The upstream's connection changed (failover, or back to its zone), the segment was re-created, or
        /// its sealed end came: the watch's next round decides.
        case moved
        /// The subscription failed (the home node gone or silent, or its error answer).
        case failed(EddyError)
    }

    /// Takes in what `started`'s subscription pushes until it ends.
    private func follow(
        _ seg: OwnedSegment, _ started: (subscription: Subscription, client: StoreClient),
        lastWaiter: inout ContinuousClock.Instant
    ) async -> UpstreamEnd {
        let incarnation = seg.info?.incarnation
        do {
            for try await chunk in started.subscription {
                counters.upstreamPushes.add(1, ordering: .relaxed)
                if seg.waiterCount > 0 { lastWaiter = .now }
                let wake = seg.learn(chunk.info)
                if chunk.data.readableBytes > 0 {
                    ledger.record(
                        seg.id, from: chunk.offset, count: chunk.data.readableBytes, geometry: geometry, request: false)
                    absorb(seg.extend(at: chunk.offset, chunk.data), seg.id)
                }
                wake.fire()
                let over = ContinuousClock.now - lastWaiter >= Self.upstreamHeartbeat || chunk.info.sealed
                if over, seg.stopWatchingIfIdle() {
                    started.subscription.cancel()
                    return .idle
                }
                if chunk.info.incarnation != incarnation || !store.isCurrent(started.client) {
                    started.subscription.cancel()
                    return .moved
                }
            }
            return .moved
        } catch {
            return .failed(error as? EddyError ?? EddyError(.connectionFailed, "\(error)"))
        }
    }

    func refreshInfo(_ seg: OwnedSegment) async throws(EddyError) -> SegmentInfo {
        let store = self.store
        let timeout = configuration.requestTimeout
        do {
            let (info, _) = try await infoRefresh.run(seg.id) {
                let r = try await store.send(.segmentInfo(seg.id), timeout: timeout)
                guard case .segmentInfo(let info) = r else {
                    throw EddyError(.malformedFrame, "the store answered segment info with \(r)")
                }
                return info
            }
            seg.learn(info).fire()
            return seg.info ?? info
        } catch {
            throw Self.typed(error)
        }
    }

    /// One read from the store, within the bytes-in-flight budget, counted in the ledger.
    func storeRead(_ segment: SegmentID, from offset: UInt64, count: Int) async throws(EddyError)
        -> (info: SegmentInfo, data: ByteBuffer)
    {
        try await budget.acquire(Int64(count), timeout: configuration.requestTimeout)
        defer { budget.release(Int64(count)) }
        let r = try await store.send(
            .read(segment: segment, offset: offset, maxBytes: UInt32(count), waitMilliseconds: 0),
            timeout: configuration.requestTimeout)
        guard case .readResult(let at, let info, let data) = r else {
            throw EddyError(.malformedFrame, "the store answered a read with \(r)")
        }
        ledger.record(segment, from: at, count: data.readableBytes, geometry: geometry)
        return (info, data)
    }
}
