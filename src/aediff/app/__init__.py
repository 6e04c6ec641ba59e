"""`aediff serve`: a web page to generate, denoise and explore (Gradio, an optional dependency:
`pip install 'aediff[app]'`). ``limits`` holds the caps and reads uploads, ``handlers`` the plain functions
behind each tab, ``page`` the Gradio layout; only ``page`` imports Gradio."""
