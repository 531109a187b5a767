// Starts `baton lsp` (setting baton.command) for .flow files; everything else is the server's.
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("baton").get("command", ["baton", "lsp"]);
  client = new LanguageClient(
    "baton",
    "Baton",
    { command, args },
    { documentSelector: [{ scheme: "file", language: "flow" }] },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
