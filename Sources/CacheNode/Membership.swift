import CacheCore
import HashRing
import Logging
import NIOCore
import StreamModel
import Synchronization
import WireProtocol

/// Membership keeps the node's view of the ring: the static member list, heartbeats to every other member, and
/// the ring of those alive. A member not heard from for `failureTimeout` leaves the ring; it rejoins when it
/// answers again; every change gives a ring with the next epoch. Nodes that reach the same member list adopt
/// the highest epoch among them (heartbeats carry it), so equal views carry equal epochs.
final class Membership: Sendable {
    struct State {
        var ring: HashRing
        var lastHeard: [String: ContinuousClock.Instant]
    }

    let me: String
    let peers: [String]
    private let configuration: NodeConfiguration
    private let state: Mutex<State>
    private let upstreams: [String: Upstream]
    private let probing = SingleFlight<Int, Void>()
    private let onChange: @Sendable (HashRing) -> Void

    init(
        configuration: NodeConfiguration, upstreams: [String: Upstream],
        onChange: @escaping @Sendable (HashRing) -> Void
    ) {
        self.configuration = configuration
        me = configuration.name
        let all = Set(configuration.members.map(\.description))
        peers = all.subtracting([me]).sorted()
        self.upstreams = upstreams
        self.onChange = onChange
        // Every listed member counts as alive at the start, so a static ring serves at once; those that do not
        // answer leave it after the failure timeout.
        let now = ContinuousClock.now
        state = Mutex(
            State(ring: HashRing(members: all), lastHeard: Dictionary(uniqueKeysWithValues: peers.map { ($0, now) })))
    }

    /// The current ring.
    var ring: HashRing { state.withLock { $0.ring } }

    /// This node's view as sent in forwards and heartbeats.
    func view(withMembers: Bool = false) -> RingView {
        let ring = self.ring
        return RingView(
            from: me, epoch: ring.epoch, fingerprint: ring.fingerprint, members: withMembers ? ring.members : [])
    }

    /// Runs heartbeat rounds until the task is cancelled.
    func run() async {
        while !Task.isCancelled {
            await probe()
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    /// One heartbeat round now, shared with any round already in progress.
    func probe() async {
        _ = try? await probing.run(0) { await self.round() }
    }

    private func round() async {
        let view = self.view(withMembers: true)
        let timeout = configuration.heartbeatInterval * 2
        await withTaskGroup(of: (String, Result<RingView, EddyError>?).self) { group in
            for peer in peers {
                guard let upstream = upstreams[peer] else { continue }
                group.addTask {
                    do throws(EddyError) {
                        guard
                            case .heartbeatAck(let answer) = try await upstream.send(.heartbeat(view), timeout: timeout)
                        else { return (peer, nil) }
                        return (peer, .success(answer))
                    } catch {
                        return (peer, .failure(error))
                    }
                }
            }
            for await (peer, answer) in group {
                switch answer {
                case .success(let view): heard(peer, view: view)
                case .failure(let error) where error.code == .unavailable && upstreams[peer]?.refused == true:
                    // Nothing listens there (a killed process): leave now rather than after the timeout.
                    state.withLock { s in
                        if s.lastHeard[peer] != nil { s.lastHeard[peer] = .now - configuration.failureTimeout }
                    }
                default: break
                }
            }
        }
        evaluate()
    }

    /// Records that `peer` is alive with `view` (from a heartbeat it sent or answered).
    func heard(_ peer: String, view: RingView) {
        state.withLock { s in
            guard s.lastHeard[peer] != nil else { return }
            s.lastHeard[peer] = .now
        }
        adopt(view)
        evaluate()
    }

    /// Takes a peer's epoch when its member list is ours and its epoch is higher.
    func adopt(_ view: RingView) {
        state.withLock { s in
            if view.fingerprint == s.ring.fingerprint, view.epoch > s.ring.epoch {
                s.ring = HashRing(members: s.ring.members, epoch: view.epoch, configuration: s.ring.configuration)
            }
        }
    }

    /// Recomputes who is alive; a change gives the next epoch and tells the node.
    private func evaluate() {
        let now = ContinuousClock.now
        let changed: HashRing? = state.withLock { s in
            let alive =
                [me] + peers.filter { p in s.lastHeard[p].map { now - $0 < configuration.failureTimeout } ?? false }
            let next = s.ring.with(members: alive)
            guard next.epoch != s.ring.epoch else { return nil }
            s.ring = next
            return next
        }
        if let changed {
            configuration.logger.notice(
                "ring changed",
                metadata: ["epoch": "\(changed.epoch)", "members": "\(changed.members.joined(separator: ","))"])
            onChange(changed)
        }
    }
}
