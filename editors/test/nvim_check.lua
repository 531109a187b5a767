-- Headless check of editors/nvim/baton.lua (tests/test_editors.py): opens a flow, waits for the server's
-- diagnostics, asks for hover and completion through Neovim's own LSP client, and writes what came back as JSON.
-- usage: nvim --headless -u editors/nvim/baton.lua -c "luafile editors/test/nvim_check.lua" FILE.flow
-- environment: BATON_NVIM_OUT (where to write), BATON_NVIM_HOVER and BATON_NVIM_COMPLETE ("line,col", 1-based line, 0-based col)

local out = { filetype = vim.bo.filetype, commentstring = vim.bo.commentstring, version = tostring(vim.version().major) .. "." .. tostring(vim.version().minor) }

local function at(spec)
  local line, col = spec:match("(%d+),(%d+)")
  vim.api.nvim_win_set_cursor(0, { tonumber(line), tonumber(col) })
  return vim.lsp.util.make_position_params()
end

local function request(method, params)
  local replies = vim.lsp.buf_request_sync(0, method, params, 20000) or {}
  for _, reply in pairs(replies) do
    if reply.result then
      return reply.result
    end
  end
  return nil
end

out.attached = vim.wait(30000, function() return #vim.lsp.buf_get_clients(0) > 0 end, 50)
out.diagnosed = vim.wait(30000, function() return #vim.diagnostic.get(0) > 0 end, 50)
out.diagnostics = {}
for _, d in ipairs(vim.diagnostic.get(0)) do
  table.insert(out.diagnostics, { line = d.lnum, col = d.col, message = d.message, code = d.code, severity = d.severity })
end
local hover = request("textDocument/hover", at(os.getenv("BATON_NVIM_HOVER")))
out.hover = hover and hover.contents and (hover.contents.value or hover.contents) or vim.NIL
local completion = request("textDocument/completion", at(os.getenv("BATON_NVIM_COMPLETE")))
out.completion = {}
for _, item in ipairs((completion and (completion.items or completion)) or {}) do
  table.insert(out.completion, item.label)
end
local file = io.open(os.getenv("BATON_NVIM_OUT"), "w")
file:write(vim.fn.json_encode(out))
file:close()
vim.cmd("qa!")
