-- Baton's `.flow` files in Neovim 0.7 and later, with no plugin: the filetype, the comment string, and the
-- language server (diagnostics, hover, completion, go to definition, rename, formatting).
--
-- Use it from init.lua:  dofile("/path/to/baton/editors/nvim/baton.lua")
-- or copy it to ~/.config/nvim/plugin/baton.lua. Set `vim.g.baton_command` first when `baton` is not on the
-- PATH, e.g. vim.g.baton_command = { "/path/to/baton/.venv/bin/baton", "lsp" }.
--
-- Neovim 0.7's filetype.vim takes a `.flow` file starting with `#` for `conf`, and `vim.filetype.add` is only
-- read there with `vim.g.do_filetype_lua = 1`: an autocommand that sets the filetype works in every version.
-- `vim.lsp.start` (0.8+) reuses one server per root; on 0.7 the client is started once per root by hand.

local group = vim.api.nvim_create_augroup("baton_flow", { clear = true })

vim.api.nvim_create_autocmd({ "BufRead", "BufNewFile" }, {
  group = group,
  pattern = "*.flow",
  command = "set filetype=flow",
})

local clients = {} -- root folder -> client id (Neovim 0.7)

local function root_of(path)
  local dir = vim.fn.fnamemodify(path, ":p:h")
  while true do
    if vim.fn.filereadable(dir .. "/models.toml") == 1 or vim.fn.isdirectory(dir .. "/.git") == 1 then
      return dir
    end
    local parent = vim.fn.fnamemodify(dir, ":h")
    if parent == dir then
      return vim.fn.fnamemodify(path, ":p:h")
    end
    dir = parent
  end
end

vim.api.nvim_create_autocmd("FileType", {
  group = group,
  pattern = "flow",
  callback = function(args)
    vim.bo[args.buf].commentstring = "# %s"
    local config = {
      name = "baton",
      cmd = vim.g.baton_command or { "baton", "lsp" },
      root_dir = root_of(vim.api.nvim_buf_get_name(args.buf)),
    }
    if vim.lsp.start then
      vim.lsp.start(config, { bufnr = args.buf })
      return
    end
    local id = clients[config.root_dir]
    if id == nil or vim.lsp.get_client_by_id(id) == nil then
      id = vim.lsp.start_client(config)
      clients[config.root_dir] = id
    end
    if id then
      vim.lsp.buf_attach_client(args.buf, id)
    end
  end,
})
