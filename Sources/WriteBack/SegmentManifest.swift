import Foundation
import NIOCore
import ObjectStorage
import StreamModel

/// SegmentManifest is the flush state of one segment, kept as a JSON object beside the segment's block objects
/// (`<prefix>/<scope>/<stream>/<segment:08>.manifest`, one level above the blocks, so it never appears in
/// their listing). Its `flushed` watermark only grows, and only after the objects below it are written: a
/// manifest never points at a missing object.
///
/// Keys (docs/protocol.md): `segment` (text), `first` (the lowest offset in objects), `flushed` (every byte from
/// `first` below it is in objects), `event_boundary`
/// (the last event start at or below `flushed`: where retention may truncate), `next_frame` (the first event
/// start at or after `flushed`, to keep finding boundaries), `objects` (how many), `sealed` (whether `flushed`
/// is the sealed segment's end), `updated_ms`, `incarnation` (which stream of this name the objects are of:
/// ``SegmentInfo/incarnation``; absent in manifests written before it was recorded).
public struct SegmentManifest: Sendable, Hashable, Codable {
    /// The segment, as text (`scope/stream/00000001`).
    public var segment: String
    /// The lowest offset held in block objects (0, or where the store's segment started when write-back began).
    public var first: UInt64
    /// Every byte from ``first`` below it is in block objects.
    public var flushed: UInt64
    /// The last event start at or below ``flushed``.
    public var eventBoundary: UInt64
    /// The first event start at or after ``flushed``.
    public var nextFrame: UInt64
    /// Block objects written.
    public var objects: Int
    /// Whether ``flushed`` is the end of the sealed segment.
    public var sealed: Bool
    /// When it was written, ms since 1970.
    public var updatedMilliseconds: Int64
    /// The ``SegmentInfo/incarnation`` of the stream whose bytes the objects hold; nil in a manifest written before
    /// it was recorded.
    public var incarnation: UInt64?

    package enum CodingKeys: String, CodingKey {
        case segment, first, flushed, objects, sealed, incarnation
        case eventBoundary = "event_boundary"
        case nextFrame = "next_frame"
        case updatedMilliseconds = "updated_ms"
    }

    /// The state of a segment nothing of which is flushed.
    public init(segment: SegmentID, incarnation: UInt64? = nil) {
        self.segment = segment.description
        self.incarnation = incarnation
        first = 0
        flushed = 0
        eventBoundary = 0
        nextFrame = 0
        objects = 0
        sealed = false
        updatedMilliseconds = 0
    }

    /// The manifest's key.
    public static func key(prefix: String, segment: SegmentID) -> String {
        ObjectKey.join(
            prefix,
            "\(segment.stream.scope)/\(segment.stream.stream)/\(ObjectKey.fixedWidth(segment.number, 8)).manifest")
    }

    /// Reads a segment's manifest; a missing one is the empty state.
    /// - Throws: the store's error, or ``EddyError/Code/corruptData`` for a manifest that does not parse.
    public static func load(from store: any ObjectStore, prefix: String, segment: SegmentID) async throws
        -> SegmentManifest
    {
        let key = key(prefix: prefix, segment: segment)
        let body: ByteBuffer
        do {
            body = try await store.get(key)
        } catch ObjectStoreError.notFound(_) {
            return SegmentManifest(segment: segment)
        }
        return try decode(Array(body.readableBytesView), key: key, segment: segment)
    }

    /// Parses and checks a manifest's bytes: it must be this segment's, with `first <= flushed` and an event
    /// boundary at or below `flushed` (the next frame may start a few bytes below `flushed`: a frame whose length
    /// field is cut by the block's end is found by the next flush). A manifest that fails is not used (its
    /// watermarks would send readers to objects that do not hold what they claim).
    /// - Throws: ``EddyError/Code/corruptData`` naming `key` and what is wrong.
    public static func decode(_ bytes: [UInt8], key: String, segment: SegmentID) throws(EddyError) -> SegmentManifest {
        let manifest: SegmentManifest
        do {
            manifest = try JSONDecoder().decode(SegmentManifest.self, from: Data(bytes))
        } catch {
            throw EddyError(.corruptData, "manifest \(key) does not parse: \(error)")
        }
        func corrupt(_ why: String) -> EddyError { EddyError(.corruptData, "manifest \(key) is corrupt: \(why)") }
        guard manifest.segment == segment.description else {
            throw corrupt("it is segment \(manifest.segment)'s, not \(segment)'s")
        }
        guard manifest.first <= manifest.flushed else {
            throw corrupt("flushed \(manifest.flushed) is below first \(manifest.first)")
        }
        guard manifest.eventBoundary <= manifest.flushed else {
            throw corrupt("event boundary \(manifest.eventBoundary) is above flushed \(manifest.flushed)")
        }
        guard manifest.objects >= 0 else { throw corrupt("\(manifest.objects) objects") }
        return manifest
    }

    /// Writes the manifest (replacing the old one).
    public func save(to store: any ObjectStore, prefix: String, segment: SegmentID) async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(self)
        _ = try await store.put(key(segment: segment, prefix: prefix), body: ByteBuffer(bytes: data), mode: .overwrite)
    }

    package func key(segment: SegmentID, prefix: String) -> String { Self.key(prefix: prefix, segment: segment) }
}
