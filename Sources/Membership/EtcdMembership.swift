import Coalescing
import EtcdGateway
import Foundation
import HashRing
import Logging
import StoreClient
import StreamModel
import Synchronization
import WireProtocol

/// Where and how a node registers in etcd (`--membership etcd`).
public struct EtcdMembershipConfiguration: Sendable, Hashable {
    /// The etcd gateway, `http://HOST:PORT`.
    public var endpoint: String
    /// The key prefix of this ring; members register at `PREFIX/members/HOST:PORT`.
    public var prefix: String = "/eddy"
    /// Seconds a registration outlives its node's last keep-alive (etcd's minimum is 2).
    public var leaseTTL: Int = 10

    /// Settings for the etcd at `endpoint`.
    public init(endpoint: String) {
        self.endpoint = endpoint
    }

    /// The prefix under which members register.
    public var membersPrefix: String {
        (prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix) + "/members/"
    }

    /// Checks the settings.
    /// - Throws: ``EddyError/Code/invalidArgument`` naming the bad one.
    public func validate() throws(EddyError) {
        guard endpoint.hasPrefix("http://"), endpoint.count > "http://".count else {
            throw EddyError(.invalidArgument, "--etcd '\(endpoint)' is not an http://HOST:PORT URL")
        }
        guard prefix.hasPrefix("/") else {
            throw EddyError(.invalidArgument, "--etcd-prefix '\(prefix)' must start with /")
        }
        guard (2...3600).contains(leaseTTL) else {
            throw EddyError(.invalidArgument, "--etcd-lease-ttl \(leaseTTL) is out of range 2...3600 seconds")
        }
    }
}

/// EtcdMembership builds the ring from etcd: the node registers its address under a lease it keeps alive, and
/// the ring is every registered address, read once and then followed by a watch of the member prefix. etcd
/// decides who is a member; nothing here votes.
///
/// - A node whose keep-alives stop (it died, or was cut off from etcd) loses its lease after the TTL, and every
///   watcher sees the DELETE. A node that finds its own lease gone (a keep-alive answered without a TTL, or the
///   DELETE of its own key) registers again.
/// - A watch cancelled because its start revision was compacted reads the range again and watches from there.
/// - A read of the members answered at a revision older than a change the watch has applied (it crossed that
///   change on its way) is not installed, so it cannot bring back a member that has gone.
/// - While etcd is unreachable the node keeps the last ring it knew and tries again (with backoff).
/// - The ring's epoch is the etcd revision at which its member list was seen (kept increasing should etcd's
///   history restart).
package final class EtcdMembership: RingMembership {
    package let holder: RingHolder
    private let me: String
    private let settings: EtcdMembershipConfiguration
    private let client: EtcdClient
    private let logger: Logger
    private let state = Mutex(State())
    private let ranging = SingleFlight<Int, Int64>()

    package struct State {
        /// Registered members by name.
        package var members: Set<String> = []
        /// The etcd revision `members` reflects: a range answered at an older revision (it was on its way while
        /// the watch applied a newer change) is stale and left out, and a watched change at or below it is
        /// already counted.
        package var revision: Int64 = 0
        package var lease: Int64?
        /// Set when the registration is known to be gone: the keeper registers again at once.
        package var lost = false
        package var leaving = false
        /// The last error talking to etcd, while it lasts.
        package var problem: String?
        /// Whether this node's registration stands.
        package var registered: Bool { lease != nil && !lost && !leaving }
    }

    package init(
        configuration: MembershipSettings, etcd: EtcdMembershipConfiguration,
        onChange: @escaping @Sendable (HashRing) -> Void
    ) {
        me = configuration.me
        settings = etcd
        client = EtcdClient(endpoint: etcd.endpoint, timeout: min(configuration.requestTimeout, .seconds(5)))
        logger = configuration.logger
        // Until etcd answers the node knows only itself (epoch 0: any ring read from etcd replaces it).
        holder = RingHolder(me: me, ring: HashRing(members: [me], epoch: 0), logger: logger, onChange: onChange)
    }

    private var key: String { settings.membersPrefix + me }

    package var knownMembers: [String] {
        state.withLock { $0.members }.sorted()
    }

    package var notReadyReason: String? {
        state.withLock { s in
            if let problem = s.problem { return "etcd at \(settings.endpoint): \(problem)" }
            if !s.registered { return "not registered in etcd at \(settings.endpoint)" }
            return nil
        }
    }

    package var summary: [String: String] {
        ["membership": "etcd", "etcd": settings.endpoint, "etcd_prefix": settings.membersPrefix]
    }

    package func heard(_ peer: String, view: RingView) { adopt(view) }

    /// Registers and reads the members, trying for up to the lease TTL.
    /// - Throws: ``EddyError/Code/unavailable`` when etcd did not answer in that time.
    package func join() async throws(EddyError) {
        let deadline = ContinuousClock.now + .seconds(settings.leaseTTL)
        var delay = Duration.milliseconds(100)
        while true {
            do throws(EddyError) {
                // Registered once is enough: a retry after a failed read does not grant a second lease.
                if state.withLock({ $0.lease == nil }) { try await register() }
                _ = try await refresh()
                return
            } catch {
                guard ContinuousClock.now + delay < deadline, !Task.isCancelled else {
                    throw EddyError(
                        .unavailable, "cannot join the ring through etcd at \(settings.endpoint): \(error.message)")
                }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    /// Keeps the registration alive and follows the member prefix until cancelled.
    package func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.keepRegistered() }
            group.addTask { await self.follow() }
        }
    }

    package func probe() async {
        _ = try? await refresh()
    }

    package func leave() async {
        let lease: Int64? = state.withLock { s in
            s.leaving = true
            return s.lease
        }
        guard let lease else { return }
        do throws(EddyError) {
            try await client.revoke(lease: lease)
            logger.info("left the ring: registration revoked in etcd", metadata: ["key": "\(key)"])
        } catch {
            logger.warning(
                "could not revoke the etcd registration; it lapses with its lease",
                metadata: ["key": "\(key)", "error": "\(error.message)"])
        }
    }

    // MARK: - Registration

    /// Grants a lease and puts this node's key under it.
    private func register() async throws(EddyError) {
        let lease = try await client.grantLease(ttl: settings.leaseTTL)
        let value = Array(
            (try? JSONSerialization.data(
                withJSONObject: ["listen": me, "registered": Date().timeIntervalSince1970], options: [.sortedKeys]))
                ?? Data())
        do {
            try await client.put(key, value, lease: lease)
        } catch {
            try? await client.revoke(lease: lease)
            throw error
        }
        let wasLeaving = state.withLock { s in
            s.lease = lease
            s.lost = false
            return s.leaving
        }
        // A drain that began while this registration was on its way takes it back.
        if wasLeaving { try? await client.revoke(lease: lease) }
        logger.info(
            "registered in etcd", metadata: ["key": "\(key)", "lease": "\(lease)", "ttl": "\(settings.leaseTTL)"])
    }

    /// Renews the lease every third of its TTL; registers again when it is lost.
    private func keepRegistered() async {
        let period = Duration.seconds(settings.leaseTTL) / 3
        var next = ContinuousClock.now + period
        while !Task.isCancelled {
            let (lease, lost, leaving) = state.withLock { ($0.lease, $0.lost, $0.leaving) }
            if leaving { return }
            if lease == nil || lost {
                do throws(EddyError) {
                    try await register()
                    noteRecovered()
                } catch {
                    noteProblem(error, "registering")
                }
                next = ContinuousClock.now + period
            } else if ContinuousClock.now >= next, let lease {
                next = ContinuousClock.now + period
                do throws(EddyError) {
                    if try await client.keepAlive(lease: lease) == nil {
                        logger.warning("etcd lease lost; registering again", metadata: ["lease": "\(lease)"])
                        state.withLock { $0.lost = true }
                        continue
                    }
                    noteRecovered()
                } catch {
                    noteProblem(error, "renewing the lease")
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    // MARK: - The member list

    /// Reads every registration and installs the ring it makes; returns the revision read.
    @discardableResult
    private func refresh() async throws(EddyError) -> Int64 {
        let client = self.client
        let prefix = settings.membersPrefix
        do {
            return try await ranging.run(0) {
                let (values, revision) = try await client.range(prefix: prefix)
                if self.install(values.map(\.key), revision: revision, restarted: false) { return revision }
                // Answered below a change the watch applied: either it was on its way meanwhile, or etcd's history
                // restarted (its data was lost). A second read begun now answers at least `mark` unless the latter.
                let mark = self.state.withLock { $0.revision }
                let (again, now) = try await client.range(prefix: prefix)
                self.install(again.map(\.key), revision: now, restarted: now < mark)
                return now
            }.0
        } catch let error as EddyError {
            throw error
        } catch {
            throw EddyError(.unavailable, "\(error)")
        }
    }

    /// Reads the members, then watches for changes from the revision read. A watch that ends (etcd went away)
    /// is resumed from the last revision seen, so no change is missed, after a backoff; one cancelled because
    /// that revision was compacted reads the members again. `start`: resume from there at first instead of
    /// reading the members.
    package func follow(from start: Int64? = nil) async {
        var delay = Duration.milliseconds(200)
        var resume = start
        while !Task.isCancelled {
            do {
                var next: Int64
                if let resume { next = resume } else { next = try await refresh() + 1 }
                resume = next
                defer { resume = next }
                try await watch(from: &next)
            } catch let error as EddyError where error.code == .truncated {
                logger.notice(
                    "etcd compacted the watched revision; reading the members again",
                    metadata: ["error": "\(error.message)"])
                resume = nil
                continue
            } catch {
                if Task.isCancelled { return }
                noteProblem(error, "watching the members")
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(5))
                continue
            }
            delay = .milliseconds(200)
        }
    }

    /// Follows the member prefix from `revision` until the watch ends (it throws then); `revision` follows the
    /// changes seen (the one after the last).
    private func watch(from revision: inout Int64) async throws {
        for try await event in client.watch(prefix: settings.membersPrefix, from: revision) {
            switch event {
            case .created:
                noteRecovered()
            case .put(let kv):
                apply(name: kv.key, revision: kv.modRevision, present: true)
                revision = max(revision, kv.modRevision + 1)
            case .delete(let key, let r):
                apply(name: key, revision: r, present: false)
                revision = max(revision, r + 1)
            }
        }
    }

    /// The member list after one watched change.
    private func apply(name key: String, revision: Int64, present: Bool) {
        guard let name = member(key) else { return }
        let applied = state.withLock { s -> (members: Set<String>, ownKeyLost: Bool)? in
            // At the revision already reflected, a change is applied again (one transaction may change several
            // keys at one revision; applying a change twice leaves the same set).
            guard revision >= s.revision else { return nil }
            s.revision = revision
            if present { s.members.insert(name) } else { s.members.remove(name) }
            let lost = !present && name == me && !s.leaving
            if lost { s.lost = true }
            return (s.members, lost)
        }
        guard let applied else { return }
        if applied.ownKeyLost { logger.warning("this node's etcd registration was deleted; registering again") }
        installRing(applied.members, revision: revision)
    }

    /// Installs the member list read at `revision`, unless the watch has already applied a later change (the
    /// range was answered before it, so installing it would bring back a member that has since gone) and etcd's
    /// history did not `restart`. Returns whether it was installed.
    @discardableResult
    package func install(_ keys: [String], revision: Int64, restarted: Bool) -> Bool {
        let members = Set(keys.compactMap(member))
        let current = state.withLock { s -> Bool in
            guard revision >= s.revision || restarted else { return false }
            s.revision = revision
            s.members = members
            if !members.contains(me), !s.leaving, s.lease != nil { s.lost = true }
            return true
        }
        noteRecovered()
        if current { installRing(members, revision: revision) }
        return current
    }

    private func installRing(_ names: Set<String>, revision: Int64) {
        holder.update { ring in
            guard names != Set(ring.members), !names.isEmpty || ring.epoch > 0 else { return nil }
            let epoch = max(UInt64(max(revision, 0)), ring.epoch + 1)
            return HashRing(members: names, epoch: epoch, configuration: ring.configuration)
        }
    }

    /// The member name of a registration key; nil (logged) for a key that is not `PREFIX/members/HOST:PORT`.
    private func member(_ key: String) -> String? {
        guard key.hasPrefix(settings.membersPrefix) else { return nil }
        let name = String(key.dropFirst(settings.membersPrefix.count))
        guard (try? ServerAddress(parsing: name)) != nil else {
            logger.warning("ignoring an etcd member key that is not HOST:PORT", metadata: ["key": "\(key)"])
            return nil
        }
        return name
    }

    private func noteProblem(_ error: any Error, _ doing: String) {
        let message = (error as? EddyError)?.message ?? "\(error)"
        let first = state.withLock { s in
            defer { s.problem = message }
            return s.problem == nil
        }
        if first {
            logger.warning(
                "etcd unreachable; keeping the last ring and trying again",
                metadata: ["while": "\(doing)", "error": "\(message)", "etcd": "\(settings.endpoint)"])
        }
    }

    private func noteRecovered() {
        let was = state.withLock { s in
            defer { s.problem = nil }
            return s.problem
        }
        if was != nil { logger.notice("etcd reachable again", metadata: ["etcd": "\(settings.endpoint)"]) }
    }
}
