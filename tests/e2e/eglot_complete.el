;;; eglot_complete.el --- eglot in batch mode asks the server for a completion  -*- lexical-binding: t -*-

;; Run after the user's init file (checked on Emacs 28.2 + eglot 1.9, Debian bookworm):
;;   emacs --batch -l INIT.el -l tests/e2e/eglot_complete.el
;; Environment: AC_FILE (visited; its project is the git repository around it), AC_LINE
;; (0-based; completion at the end of that line), AC_OUT (JSON result), AC_TIMEOUT_S.
;; Starts eglot as `M-x eglot' does, runs `completion-at-point' (C-M-i) at the end of the line,
;; writes {"ok": true, "command": [...], "line": ..., "lines": [...]} or
;; {"ok": false, "error": ...}, shuts the server down and exits (status 0 on success).

;;; Code:

(require 'eglot)
(require 'json)

(defvar ac-timeout (string-to-number (or (getenv "AC_TIMEOUT_S") "120")))

;; The user said yes (`!') to the project's .dir-locals.el.
(setq enable-local-variables :all)

(defun ac-write (result)
  (with-temp-file (getenv "AC_OUT")
    (insert (json-encode result))))

(defun ac-wait (predicate what)
  "Wait until PREDICATE holds, processing the server's messages."
  (let ((deadline (+ (float-time) ac-timeout)))
    (while (not (funcall predicate))
      (when (> (float-time) deadline)
        (error "Timed out waiting for %s" what))
      (accept-process-output nil 0.05))))

(defun ac-complete ()
  (find-file (getenv "AC_FILE"))
  (apply #'eglot (eglot--guess-contact))
  (ac-wait (lambda () (eglot-current-server)) "eglot to connect")
  (let ((server (eglot-current-server))
        (line (string-to-number (getenv "AC_LINE")))
        (before (buffer-string)))
    (goto-char (point-min))
    (forward-line line)
    (end-of-line)
    ;; The first request also waits for the model to load on a busy machine.
    (let ((jsonrpc-default-request-timeout ac-timeout))
      (completion-at-point))
    (let ((result `((ok . t)
                    (command . ,(vconcat (process-command (jsonrpc--process server))))
                    (changed . ,(if (equal before (buffer-string)) :json-false t))
                    (lines . ,(vconcat (split-string (buffer-string) "\n"))))))
      (eglot-shutdown server)
      result)))

(let ((result (condition-case err
                  (ac-complete)
                (error `((ok . :json-false) (error . ,(error-message-string err)))))))
  (ac-write result)
  (kill-emacs (if (eq (alist-get 'ok result) t) 0 1)))

;;; eglot_complete.el ends here
