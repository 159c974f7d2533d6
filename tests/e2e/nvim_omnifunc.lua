-- Drives Neovim's own completion in a buffer that the user's init.lua attached the server to:
-- waits for the client, types <C-x><C-o> at a position, accepts the first item (<C-y> when
-- a menu shows), and writes the inserted item and what the buffer holds then.
--
-- Run after the file is opened (works on Neovim 0.7.2, Debian bookworm, and later):
--   nvim --headless -i NONE -n FILE -c "luafile tests/e2e/nvim_omnifunc.lua" -c "cquit! 2"
-- The trailing cquit is reached only if this script cannot be loaded.
--
-- Environment: AC_LINE, AC_COL (0-based; the cursor goes to the end of that line when
-- AC_COL is its length), AC_OUT (the JSON result file), AC_TIMEOUT_MS.
-- Writes {"ok": true, "root": ..., "word": ..., "menu": <shown before accepting>, "lsp_item": {...},
-- "lines": [...]} or {"ok": false, "error": ...};
-- stops the clients (shutdown + exit reach the server) and quits: status 0 on success.

local uv = vim.loop
local started = uv.hrtime()
local timeout_ms = tonumber(os.getenv('AC_TIMEOUT_MS') or '') or 120000

local function remaining()
  return math.max(1, timeout_ms - (uv.hrtime() - started) / 1e6)
end

local function write_out(result)
  local file = assert(io.open(assert(os.getenv('AC_OUT'), 'AC_OUT not set'), 'w'))
  file:write(vim.fn.json_encode(result))
  file:close()
end

local function aligncoder_client(bufnr)
  for _, client in pairs(vim.lsp.get_active_clients()) do
    if client.name == 'aligncoder' and vim.lsp.buf_is_attached(bufnr, client.id) then
      return client
    end
  end
end

local function keys(text)
  return vim.api.nvim_replace_termcodes(text, true, false, true)
end

local function complete_and_accept(insert)
  local inserted = nil
  local menu = false
  local timer = uv.new_timer()
  timer:start(50, 50, vim.schedule_wrap(function()
    if vim.fn.pumvisible() == 1 then
      menu = true
      vim.api.nvim_feedkeys(keys('<C-y>'), 'n', false)
      return
    end
    if next(vim.v.completed_item) ~= nil then -- without menuone in 'completeopt', at once
      inserted = vim.v.completed_item
    end
    if inserted or remaining() <= 1 then
      timer:stop()
      timer:close()
      vim.api.nvim_feedkeys(keys('<Esc>'), 'n', false)
    end
  end))
  -- 'x!': run the keys and stay in insert mode until the timer above leaves it.
  vim.api.nvim_feedkeys(keys(insert .. '<C-x><C-o>'), 'x!', false)
  return inserted, menu
end

local function main()
  local bufnr = vim.api.nvim_get_current_buf()
  local attached = vim.wait(remaining(), function()
    local client = aligncoder_client(bufnr)
    return client ~= nil and client.initialized == true
  end, 20)
  if not attached then
    error('no initialized aligncoder client on the buffer (filetype: ' .. vim.bo[bufnr].filetype .. ')')
  end
  local line = tonumber(os.getenv('AC_LINE'))
  local col = tonumber(os.getenv('AC_COL'))
  vim.api.nvim_win_set_cursor(0, { line + 1, col })
  local at_end = col >= #vim.api.nvim_buf_get_lines(bufnr, line, line + 1, true)[1]
  local item, menu = complete_and_accept(at_end and 'A' or 'i') -- normal mode cannot stand after the last character
  if not item then
    error('no completion inserted within the time limit')
  end
  return {
    ok = true,
    root = aligncoder_client(bufnr).config.root_dir,
    word = item.word,
    menu = menu,
    lsp_item = item.user_data.nvim.lsp.completion_item,
    lines = vim.api.nvim_buf_get_lines(bufnr, 0, -1, false),
  }
end

local function stop_clients()
  for _, client in pairs(vim.lsp.get_active_clients()) do
    vim.lsp.stop_client(client.id)
  end
  vim.wait(10000, function()
    return next(vim.lsp.get_active_clients()) == nil
  end, 20)
end

local ok, result = xpcall(main, debug.traceback)
write_out(ok and result or { ok = false, error = tostring(result) })
stop_clients()
vim.cmd(ok and 'qa!' or 'cquit! 1')
