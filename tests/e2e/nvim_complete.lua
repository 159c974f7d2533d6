-- Headless Neovim LSP completion driver for end-to-end tests.
--
-- Run (verified on Neovim 0.7.2 = Debian bookworm; written to work on newer ones):
--   nvim --headless --clean -u NONE -i NONE -n \
--        -c "luafile tests/e2e/nvim_complete.lua" -c "cquit! 2"
-- The trailing `-c "cquit! 2"` is a safety net: if the script cannot be loaded
-- (bad path, syntax error) headless nvim would otherwise keep running forever.
-- On success the script quits itself, so that command is never reached.
-- (`nvim -l script.lua` only exists from 0.9, hence `-c luafile`.)
--
-- Parameters (environment variables):
--   AC_SERVER_CMD  JSON array, the server command, e.g. ["python", "-m", "aligncoder_lsp"]
--   AC_ROOT        workspace root directory
--   AC_FILE        file to open
--   AC_LINE        0-based line of the completion position
--   AC_COL         0-based character (UTF-16 units, as in LSP) of the position
--   AC_OUT         path of the JSON result file
--   AC_TIMEOUT_MS  overall wait budget in ms (default 120000)
--
-- Writes {"ok": true, "result": <server result>} or {"ok": false, "error": "..."}
-- to AC_OUT, stops the client (shutdown + exit reach the server), then quits:
-- exit status 0 on success, non-zero (cquit) on any failure or timeout.
-- 0.7-0.9: vim.lsp.start_client + buf_attach_client; >= 0.10: vim.lsp.start.

local uv = vim.uv or vim.loop

-- Under --clean, opening a .py file runs ftplugin/python.vim, which probes the
-- python3 provider (spawns python3, ~0.7-1.5 s). Disable all providers.
for _, p in ipairs({ 'python', 'python3', 'ruby', 'node', 'perl' }) do
  vim.g['loaded_' .. p .. '_provider'] = 0
end
vim.o.swapfile = false
vim.o.shortmess = vim.o.shortmess .. 'F'

local t0 = uv.hrtime()
local function elapsed_ms()
  return (uv.hrtime() - t0) / 1e6
end

local out_path = os.getenv('AC_OUT')
local timeout_ms = tonumber(os.getenv('AC_TIMEOUT_MS') or '') or 120000

local function write_out(tbl)
  if not out_path or out_path == '' then
    io.stderr:write('nvim_complete.lua: AC_OUT not set\n')
    return
  end
  local f = io.open(out_path, 'w')
  if not f then
    io.stderr:write('nvim_complete.lua: cannot open ' .. out_path .. '\n')
    return
  end
  f:write(vim.fn.json_encode(tbl))
  f:close()
end

local function remaining()
  return math.max(1, timeout_ms - elapsed_ms())
end

local client_id = nil
local client_exited = false
local exit_info = nil

local function stop_client()
  if not client_id or client_exited then
    return
  end
  -- Graceful: the client sends "shutdown", then "exit" once shutdown is answered.
  -- (vim.lsp.stop_client exists in all versions; avoids client.stop vs client:stop.)
  vim.lsp.stop_client(client_id)
  -- Wait for the server process to exit (bounded).
  local ok = vim.wait(math.min(10000, remaining()), function()
    return client_exited
  end, 20)
  if not ok then
    vim.lsp.stop_client(client_id, true) -- SIGTERM
    vim.wait(2000, function()
      return client_exited
    end, 20)
  end
end

local function finish(ok)
  stop_client()
  if ok then
    vim.cmd('qa!')
  else
    vim.cmd('cquit! 1')
  end
end

local function main()
  local cmd_json = os.getenv('AC_SERVER_CMD')
  local root = os.getenv('AC_ROOT')
  local file = os.getenv('AC_FILE')
  local line = tonumber(os.getenv('AC_LINE') or '')
  local col = tonumber(os.getenv('AC_COL') or '')
  if not (cmd_json and root and file and line and col) then
    error('missing one of AC_SERVER_CMD, AC_ROOT, AC_FILE, AC_LINE, AC_COL')
  end
  local cmd = vim.fn.json_decode(cmd_json)
  if type(cmd) ~= 'table' or #cmd == 0 then
    error('AC_SERVER_CMD must be a non-empty JSON array')
  end

  root = vim.fn.fnamemodify(root, ':p'):gsub('/$', '')
  file = vim.fn.fnamemodify(file, ':p')

  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  local bufnr = vim.api.nvim_get_current_buf()
  -- -u NONE disables filetype detection; languageId is taken from 'filetype'.
  vim.bo[bufnr].filetype = 'python'

  local config = {
    name = 'aligncoder-e2e',
    cmd = cmd,
    cmd_cwd = root,
    root_dir = root,
    workspace_folders = {
      { uri = vim.uri_from_fname(root), name = vim.fn.fnamemodify(root, ':t') },
    },
    flags = { exit_timeout = 5000 },
    handlers = {
      -- keep headless output quiet
      ['window/showMessage'] = function() end,
      ['window/logMessage'] = function() end,
    },
    on_exit = function(code, signal)
      exit_info = { code = code, signal = signal }
      client_exited = true
    end,
  }
  if vim.fn.has('nvim-0.10') == 1 then
    -- start_client is deprecated from 0.11; vim.lsp.start also attaches bufnr.
    client_id = vim.lsp.start(config, {
      bufnr = bufnr,
      reuse_client = function()
        return false
      end,
    })
    if not client_id then
      error('vim.lsp.start failed (bad AC_SERVER_CMD?)')
    end
  else
    -- 0.7 (Debian bookworm): no vim.lsp.start.
    client_id = vim.lsp.start_client(config)
    if not client_id then
      error('vim.lsp.start_client failed (bad AC_SERVER_CMD?)')
    end
    if not vim.lsp.buf_attach_client(bufnr, client_id) then
      error('vim.lsp.buf_attach_client failed')
    end
  end

  -- Wait for the initialize handshake (didOpen is sent right after it).
  local ready = vim.wait(remaining(), function()
    if client_exited then
      return true
    end
    local c = vim.lsp.get_client_by_id(client_id)
    return c ~= nil and c.initialized == true
  end, 20)
  if client_exited then
    error('server exited during startup: ' .. vim.fn.json_encode(exit_info))
  end
  if not ready then
    error(string.format('timeout waiting for initialize (%d ms)', timeout_ms))
  end

  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = line, character = col },
    context = { triggerKind = 1 },
  }
  local responses, err = vim.lsp.buf_request_sync(bufnr, 'textDocument/completion', params, remaining())
  if not responses then
    error('completion request failed: ' .. tostring(err))
  end
  local resp = responses[client_id]
  if not resp then
    error('no completion response from client')
  end
  -- response shape is { err = ..., result = ... } (accept "error" too)
  local rerr = resp.err or resp.error
  if rerr then
    error('server returned error: ' .. vim.fn.json_encode(rerr))
  end
  local result = resp.result
  if result == nil then
    result = vim.NIL
  end
  write_out({ ok = true, result = result, elapsed_ms = math.floor(elapsed_ms()) })
end

local ok, err = xpcall(main, debug.traceback)
if not ok then
  write_out({ ok = false, error = tostring(err), elapsed_ms = math.floor(elapsed_ms()) })
  io.stderr:write('nvim_complete.lua: ' .. tostring(err) .. '\n')
end
finish(ok)
