import Coalescing
import EddyTLS
import HashRing
import Logging
import NIOCore
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

/// StaticMembership is the static member list with heartbeats to every other member: a member not heard from for
/// `failureTimeout` leaves the ring; it rejoins when it answers again; every change gives a ring with the next
/// epoch.
package final class StaticMembership: RingMembership {
    package let holder: RingHolder
    package let peers: [String]
    private let me: String
    private let configuration: MembershipSettings
    private let lastHeard: Mutex<[String: ContinuousClock.Instant]>
    private let upstreams: PeerSet
    private let probing = SingleFlight<Int, Void>()

    package init(
        configuration: MembershipSettings, upstreams: PeerSet, onChange: @escaping @Sendable (HashRing) -> Void
    ) {
        self.configuration = configuration
        me = configuration.me
        let all = Set(configuration.members.map(\.description))
        peers = all.subtracting([me]).sorted()
        self.upstreams = upstreams
        // Every listed member counts as alive at the start, so a static ring serves at once; those that do not
        // answer leave it after the failure timeout.
        let now = ContinuousClock.now
        lastHeard = Mutex(Dictionary(uniqueKeysWithValues: peers.map { ($0, now) }))
        holder = RingHolder(
            me: me, ring: HashRing(members: all), logger: configuration.logger, onChange: onChange)
    }

    package var knownMembers: [String] { ([me] + peers).sorted() }

    package var notReadyReason: String? { ring.members.contains(me) ? nil : "not in the ring" }

    package var summary: [String: String] { ["membership": "static"] }

    package func join() async throws(EddyError) {}

    package func leave() async {}

    /// Runs heartbeat rounds until the task is cancelled.
    package func run() async {
        while !Task.isCancelled {
            await probe()
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    /// One heartbeat round now, shared with any round already in progress.
    package func probe() async {
        _ = try? await probing.run(0) { await self.round() }
    }

    private func round() async {
        let view = self.view(withMembers: true)
        let timeout = configuration.heartbeatInterval * 2
        await withTaskGroup(of: (String, Result<RingView, EddyError>?).self) { group in
            for peer in peers {
                guard let upstream = upstreams.upstream(peer) else { continue }
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
                case .failure(let error) where error.code == .unavailable && upstreams.upstream(peer)?.refused == true:
                    // Nothing listens there (a killed process): leave now rather than after the timeout.
                    lastHeard.withLock { l in
                        if l[peer] != nil { l[peer] = .now - configuration.failureTimeout }
                    }
                default: break
                }
            }
        }
        evaluate()
    }

    package func heard(_ peer: String, view: RingView) {
        lastHeard.withLock { l in
            guard l[peer] != nil else { return }
            l[peer] = .now
        }
        adopt(view)
        evaluate()
    }

    /// Recomputes who is alive; a change gives the next epoch and tells the node.
    private func evaluate() {
        let now = ContinuousClock.now
        let alive = lastHeard.withLock { l in
            [me] + peers.filter { p in l[p].map { now - $0 < configuration.failureTimeout } ?? false }
        }
        holder.update { $0.with(members: alive) }
    }
}
