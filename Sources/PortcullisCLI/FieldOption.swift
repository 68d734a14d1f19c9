import ArgumentParser
import PortcullisCore
import PortcullisPlugins

/// `--field POINTER`: print one value of a command's JSON document, so scripts need no JSON tool
/// of their own.
struct FieldOption: ParsableArguments {
    @Option(name: .customLong("field"), help: ArgumentHelp(
        "Print only the value at this JSON Pointer of the JSON document (a string as is, anything else as JSON).",
        valueName: "pointer"))
    var field: String?

    /// Prints the value at `field` in `document`; exit 64 when `field` is not a JSON Pointer and
    /// 1 when `document` has no value there (`documentName` says which document in the message).
    func printValue(of document: JSONValue, documentName: String) throws {
        guard let field else { return }
        guard case .success(let pointer) = JSONPointer.parse(field) else {
            throw ValidationError("--field takes a JSON Pointer such as /server/socket")
        }
        guard let value = document.value(at: pointer) else {
            printError("portcullis: no \(field) in \(documentName)")
            throw ExitCode(1)
        }
        print(value.stringValue ?? JSONCodec.serialize(value))
    }
}
