import NIOCore
import StreamModel

/// Frame is one protocol frame (docs/protocol.md, "Frames"): `u32 length | u8 type | u32 request ID | body`,
/// where length counts the bytes after itself (at least 5). Request IDs let one connection carry many
/// requests at once; a response carries the ID of its request.
public struct Frame: Sendable, Equatable {
    /// Bytes of the length field.
    public static let lengthSize = 4
    /// Bytes of the type and request ID after the length.
    public static let headerSize = 5
    /// The default largest frame (length field value) a peer accepts: 16 MiB of body plus the header.
    public static let defaultMaxFrameSize = (16 << 20) + 1024

    /// The message type (``MessageType``).
    public var type: UInt8
    /// The request this frame belongs to.
    public var requestID: UInt32
    /// The message body.
    public var body: ByteBuffer

    /// Creates a frame.
    public init(type: UInt8, requestID: UInt32, body: ByteBuffer) {
        self.type = type
        self.requestID = requestID
        self.body = body
    }
}

/// FrameDecoder cuts a byte stream into ``Frame``s. A length field over `maxFrameSize` or under the header
/// size is a protocol error (``EddyError/Code/frameTooLarge`` or ``EddyError/Code/malformedFrame``) that the
/// handler answers and then closes the connection: past a bad length there is no telling where frames start.
public struct FrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    /// The largest length field accepted.
    public let maxFrameSize: Int

    /// Creates a decoder.
    public init(maxFrameSize: Int = Frame.defaultMaxFrameSize) {
        self.maxFrameSize = maxFrameSize
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return .needMoreData }
        guard Int(length) <= maxFrameSize else {
            throw EddyError(.frameTooLarge, "frame of \(length) bytes is over the maximum of \(maxFrameSize)")
        }
        guard Int(length) >= Frame.headerSize else {
            throw EddyError(.malformedFrame, "frame length \(length) is shorter than the 5-byte header")
        }
        guard buffer.readableBytes >= Frame.lengthSize + Int(length) else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: Frame.lengthSize)
        let type = buffer.readInteger(as: UInt8.self)!
        let requestID = buffer.readInteger(as: UInt32.self)!
        let body = buffer.readSlice(length: Int(length) - Frame.headerSize)!
        context.fireChannelRead(wrapInboundOut(Frame(type: type, requestID: requestID, body: body)))
        return .continue
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool)
        throws -> DecodingState
    {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// FrameEncoder writes ``Frame``s.
public struct FrameEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Frame

    /// Creates an encoder.
    public init() {}

    public func encode(data: Frame, out: inout ByteBuffer) throws {
        out.reserveCapacity(minimumWritableBytes: Frame.lengthSize + Frame.headerSize + data.body.readableBytes)
        out.writeInteger(UInt32(Frame.headerSize + data.body.readableBytes))
        out.writeInteger(data.type)
        out.writeInteger(data.requestID)
        var body = data.body
        out.writeBuffer(&body)
    }
}
