import XCTest
@testable import PortcullisPlugins

/// The byte-level media type check must answer like the Character-level one it short-cuts.
final class TransformMediaTypeTests: XCTestCase {
    func testMediaTypes() {
        let yes = ["application/json", "APPLICATION/JSON", "application/json; charset=utf-8", " application/json ;x",
                   "\tapplication/json\t", "application/problem+json", "application/vnd.api+JSON", ";application/json",
                   ";;application/json;", "a/+json", "x/y+json; q=1"]
        let no = [nil, "", ";", "text/plain", "application/jsonx", "application/json5", "+json", "/+json", "application",
                  "application/ json", "json", "text/json+xml", "application/x-json", " ; application/json",
                  "application/j\u{00E9}son", "application/x\u{0600}+json", "application/json;\u{301}"]
        for type in yes { XCTAssertTrue(JSONMediaType.matches(type), type) }
        for type in no { XCTAssertFalse(JSONMediaType.matches(type), type ?? "nil") }
    }

    func testFormMediaTypes() {
        let yes = ["application/x-www-form-urlencoded", "APPLICATION/X-WWW-FORM-URLENCODED", " application/x-www-form-urlencoded\t; charset=utf-8",
                   "application/x-www-form-urlencoded;"]
        let no = [nil, "", ";application/x-www-form-urlencoded", "application/x-www-form-urlencodedx", "application/json",
                  "multipart/form-data", "application/x-www-form-urlencod\u{00E9}d", "application/x-www-form-urlencoded\u{301}"]
        for type in yes { XCTAssertTrue(FormMediaType.matches(type), type) }
        for type in no { XCTAssertFalse(FormMediaType.matches(type), type ?? "nil") }
    }

    func testFormASCIIPathAgreesWithCharacterPath() {
        let pieces = ["application", "/", "x-www-form-urlencoded", "X-WWW-FORM-URLENCODED", ";", " ", "\t", "x", "charset=utf-8", "\r\n"]
        var rng = SplitMix(seed: 5)
        for text in rng.texts(from: pieces, count: 5000) {
            var copy = text
            let ascii = copy.withUTF8 { FormMediaType.matchesASCII($0) }
            XCTAssertEqual(ascii, FormMediaType.matchesCharacters(text), text.debugDescription)
        }
    }

    func testASCIIPathAgreesWithCharacterPath() {
        let pieces = ["application", "/", "json", "+json", ";", " ", "\t", "x", "JSON", "A", "charset=utf-8", "/json", "+"]
        var rng = SplitMix(seed: 3)
        for text in rng.texts(from: pieces, count: 5000) {
            var copy = text
            let ascii = copy.withUTF8 { JSONMediaType.matchesASCII($0) }
            XCTAssertEqual(ascii, JSONMediaType.matchesCharacters(text), text.debugDescription)
        }
    }
}
