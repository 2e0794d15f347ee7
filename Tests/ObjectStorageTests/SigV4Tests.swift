import EddyTestSupport
import Foundation
import Testing

@testable import ObjectStorage

/// SigV4 against the published vectors in shared/vectors/sigv4: the AWS test suite (38 requests, each signed in
/// the header and in the query) and S3's own examples (virtual-host and path style, ranges, listings, create-only
/// puts, a presigned URL, the chunks of a streaming upload).
@Suite struct SigV4Tests {
    static let folder = sharedTestFolder(holding: "vectors/sigv4/SOURCES.md").map { $0 + "/vectors/sigv4" }

    static let suiteNames: [String] = {
        guard let folder else { return [] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder + "/aws-c-auth/v4")) ?? []
        return names.sorted()
    }()

    @Test func vectorsArePresent() {
        #expect(Self.folder != nil, "shared/vectors/sigv4 must sit beside (or above) the repository")
        #expect(Self.suiteNames.count == 38)
    }

    /// A request of the AWS suite: method, decoded path and query, headers in order, body.
    struct SuiteRequest {
        var method: String
        var path: String
        var query: [(String, String)]
        var headers: [(String, String)]
        var body: [UInt8]
    }

    static func parse(_ text: String) -> SuiteRequest {
        let (head, body): (Substring, Substring) = {
            if let split = text.firstRange(of: "\n\n") {
                return (text[..<split.lowerBound], text[split.upperBound...])
            }
            return (text[...], "")
        }()
        var lines = head.split(separator: "\n", omittingEmptySubsequences: false)
        let requestLine = lines.removeFirst().split(separator: " ")
        let target = requestLine[1..<(requestLine.count - 1)].joined(separator: " ")
        let pathPart = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var query: [(String, String)] = []
        if pathPart.count == 2 && !pathPart[1].isEmpty {
            for item in pathPart[1].split(separator: "&") {
                let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                query.append((percentDecode(kv[0]), kv.count > 1 ? percentDecode(kv[1]) : ""))
            }
        }
        var headers: [(String, String)] = []
        for line in lines where !line.isEmpty {
            if line.first == " " || line.first == "\t" {
                headers[headers.count - 1].1 += "\n" + line
            } else if let colon = line.firstIndex(of: ":") {
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            }
        }
        return SuiteRequest(
            method: String(requestLine[0]), path: percentDecode(pathPart[0]), query: query, headers: headers,
            body: Array(body.utf8))
    }

    static func percentDecode(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var index = text.utf8.startIndex
        let utf8 = text.utf8
        while index != utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%"), let hi = utf8.index(index, offsetBy: 1, limitedBy: utf8.endIndex),
                let lo = utf8.index(index, offsetBy: 2, limitedBy: utf8.endIndex), lo != utf8.endIndex,
                let value = UInt8(String(decoding: [utf8[hi], utf8[lo]], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                index = utf8.index(after: lo)
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    static func json(_ path: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
    }

    static func seconds(_ iso: String) -> Int64 {
        let formatter = ISO8601DateFormatter()
        return Int64(formatter.date(from: iso)!.timeIntervalSince1970)
    }

    @Test(arguments: suiteNames) func awsSuite(name: String) throws {
        let dir = Self.folder! + "/aws-c-auth/v4/" + name
        let context = try Self.json(dir + "/context.json")
        let credentials = context["credentials"] as! [String: String]
        let signer = SigV4Signer(
            credentials: AWSCredentials(
                accessKeyID: credentials["access_key_id"]!, secretAccessKey: credentials["secret_access_key"]!,
                sessionToken: credentials["token"]),
            region: context["region"] as! String, service: context["service"] as! String,
            normalizesPath: context["normalize"] as? Bool ?? true)
        let time = SigV4Time(secondsSince1970: Self.seconds(context["timestamp"] as! String))
        #expect(time.amzDate == "20150830T123600Z")
        let request = Self.parse(try Self.read(dir + "/request.txt"))
        let signsBody = context["sign_body"] as? Bool ?? false
        let payloadHash = SigV4Signer.sha256Hex(signsBody ? request.body : [])
        let signsToken = !(context["omit_session_token"] as? Bool ?? false)

        var headers = request.headers
        if signsBody { headers.append(("X-Amz-Content-Sha256", payloadHash)) }
        let header = signer.signHeaders(
            method: request.method, path: request.path, query: request.query, headers: headers,
            payloadHash: payloadHash, time: time, signsSessionToken: signsToken)
        #expect(header.canonicalRequest == (try Self.read(dir + "/header-canonical-request.txt")))
        #expect(header.stringToSign == (try Self.read(dir + "/header-string-to-sign.txt")))
        #expect(header.signature == (try Self.read(dir + "/header-signature.txt")).trimmingCharacters(in: .newlines))
        let signedRequest = try Self.read(dir + "/header-signed-request.txt")
        let authorization = header.headers.first { $0.0 == "Authorization" }!.1
        #expect(signedRequest.contains("Authorization:" + authorization))

        let query = signer.presign(
            method: request.method, path: request.path, query: request.query, headers: request.headers,
            expires: context["expiration_in_seconds"] as? Int ?? 3600, payloadHash: payloadHash, time: time,
            signsSessionToken: signsToken)
        #expect(query.canonicalRequest == (try Self.read(dir + "/query-canonical-request.txt")))
        #expect(query.stringToSign == (try Self.read(dir + "/query-string-to-sign.txt")))
        #expect(query.signature == (try Self.read(dir + "/query-signature.txt")).trimmingCharacters(in: .newlines))
        #expect(query.query.last?.0 == "X-Amz-Signature" && query.query.last?.1 == query.signature)
    }

    nonisolated(unsafe) static let s3 = folder.flatMap { try? json($0 + "/s3-profile/s3-vectors.json") }
    static let s3CaseNames: [String] = {
        (s3?["cases"] as? [[String: Any]] ?? []).map { $0["name"] as! String }
    }()

    @Test func s3VectorsArePresent() { #expect(Self.s3CaseNames.count == 9) }

    @Test(arguments: s3CaseNames) func s3Profile(name: String) throws {
        let document = Self.s3!
        let credentials = document["credentials"] as! [String: String]
        let signer = SigV4Signer(
            credentials: AWSCredentials(
                accessKeyID: credentials["access_key_id"]!, secretAccessKey: credentials["secret_access_key"]!),
            region: document["region"] as! String, service: document["service"] as! String)
        let time = SigV4Time(secondsSince1970: Self.seconds(document["timestamp"] as! String))
        let test = (document["cases"] as! [[String: Any]]).first { $0["name"] as? String == name }!
        let url = URLComponents(string: test["url"] as! String)!
        let hostHeader = url.port.map { "\(url.host!):\($0)" } ?? url.host!
        let path = url.percentEncodedPath.isEmpty ? "/" : Self.percentDecode(Substring(url.percentEncodedPath))
        let query = (url.percentEncodedQueryItems ?? []).map {
            (Self.percentDecode(Substring($0.name)), Self.percentDecode(Substring($0.value ?? "")))
        }
        let method = test["method"] as! String
        // Signed headers of the case: Host, and what it sent, without what the signer adds itself.
        var headers: [(String, String)] = [("Host", hostHeader)]
        for (name, value) in test["request_headers"] as? [String: String] ?? [:] {
            let lower = name.lowercased()
            if lower == "host" || lower == "authorization" || lower == "x-amz-date" { continue }
            headers.append((name, value))
        }
        if name.hasPrefix("presigned") {
            let signature = signer.presign(
                method: method, path: path, query: query, headers: headers, expires: test["expires"] as! Int,
                payloadHash: SigV4Signer.unsignedPayload, time: time)
            #expect(signature.canonicalRequest == test["canonical_request"] as! String)
            #expect(signature.stringToSign == test["string_to_sign"] as! String)
            #expect(signature.signature == test["signature"] as! String)
            #expect(signature.signature == test["published_signature"] as! String)
            return
        }
        if name.hasPrefix("streaming") {
            // The seed request's headers, as the canonical request lists them.
            let canonical = test["canonical_request"] as! String
            let block = canonical.split(separator: "\n", omittingEmptySubsequences: false).dropFirst(3)
                .prefix { !$0.isEmpty }
            let streamHeaders = block.map { line -> (String, String) in
                let colon = line.firstIndex(of: ":")!
                return (String(line[..<colon]), String(line[line.index(after: colon)...]))
            }.filter { $0.0 != "x-amz-date" }
            let seed = signer.signHeaders(
                method: method, path: path, query: query, headers: streamHeaders,
                payloadHash: SigV4Signer.streamingPayload, time: time)
            #expect(seed.canonicalRequest == canonical)
            #expect(seed.stringToSign == test["string_to_sign"] as! String)
            #expect(seed.signature == test["seed_signature"] as! String)
            var previous = seed.signature
            for chunk in test["chunks"] as! [[String: Any]] {
                let bytes = [UInt8](repeating: UInt8(ascii: "a"), count: chunk["chunk_size"] as! Int)
                let signed = signer.chunkSignature(previous: previous, chunk: bytes, time: time)
                #expect(signed.stringToSign == chunk["string_to_sign"] as! String)
                #expect(signed.signature == chunk["signature"] as! String)
                previous = signed.signature
            }
            let published = test["published"] as! [String: Any]
            #expect(previous == (published["chunks"] as! [String]).last!)
            return
        }
        let payloadHash =
            headers.first { $0.0.lowercased() == "x-amz-content-sha256" }?.1
            ?? SigV4Signer.sha256Hex(Array((test["body"] as? String ?? "").utf8))
        let signature = signer.signHeaders(
            method: method, path: path, query: query, headers: headers, payloadHash: payloadHash, time: time)
        #expect(signature.canonicalRequest == test["canonical_request"] as! String)
        #expect(signature.stringToSign == test["string_to_sign"] as! String)
        #expect(signature.signature == test["signature"] as! String)
        if let published = test["published_signature"] as? String {
            #expect(signature.signature == published)
        }
    }

    @Test func encodingAndTime() {
        #expect(SigV4Signer.uriEncode("a b/c~d+e", keepSlash: true) == "a%20b/c~d%2Be")
        #expect(SigV4Signer.uriEncode("a/b=c", keepSlash: false) == "a%2Fb%3Dc")
        #expect(SigV4Signer.uriEncode("ሴ", keepSlash: false) == "%E1%88%B4")
        #expect(SigV4Time(secondsSince1970: 0).amzDate == "19700101T000000Z")
        #expect(SigV4Time(secondsSince1970: 1_369_353_600).amzDate == "20130524T000000Z")
        #expect(HTTPDate.parse("Fri, 24 May 2013 00:00:00 GMT") == 1_369_353_600)
        #expect(HTTPDate.parse("not a date") == nil)
        #expect(Base64.encode(Array("Welcome".utf8)) == "V2VsY29tZQ==")
        #expect(Base64.encode(Array("ab".utf8)) == "YWI=")
        #expect(Base64.encode([]) == "")
    }

    @Test func credentialsFromEnvironment() {
        #expect(AWSCredentials.fromEnvironment([:]) == nil)
        #expect(AWSCredentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "a"]) == nil)
        let both = AWSCredentials.fromEnvironment([
            "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t",
        ])
        #expect(both == AWSCredentials(accessKeyID: "a", secretAccessKey: "s", sessionToken: "t"))
    }

    @Test func xmlExtraction() {
        let xml: Substring = """
            <?xml version="1.0"?><ListBucketResult xmlns="x"><IsTruncated>true</IsTruncated>\
            <Contents><Key>a&amp;b &lt;c&gt; &#233;&#x41;</Key><Size>12</Size><ETag>&quot;abc&quot;</ETag></Contents>\
            <Contents><Key>k2</Key><Size>0</Size></Contents><KeyCount>2</KeyCount><Prefix/>\
            <NextContinuationToken>k2</NextContinuationToken></ListBucketResult>
            """
        let contents = S3XML.elements("Contents", in: xml)
        #expect(contents.count == 2)
        #expect(S3XML.text("Key", in: contents[0]) == "a&b <c> éA")
        #expect(S3XML.text("ETag", in: contents[0])?.trimmingQuotes() == "abc")
        #expect(S3XML.text("Size", in: contents[1]) == "0")
        #expect(S3XML.text("KeyCount", in: xml) == "2")
        #expect(S3XML.text("Prefix", in: xml) == "")
        #expect(S3XML.text("IsTruncated", in: xml) == "true")
        #expect(S3XML.text("Missing", in: xml) == nil)
        #expect(S3XML.decode("a & b") == "a & b")
    }
}
