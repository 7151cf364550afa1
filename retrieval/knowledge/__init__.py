"""Knowledge beyond FAQ files: documents (Markdown, HTML, PDF, .docx, text) and web pages,
read into sections, split along their headings into passages the index serves beside FAQ
entries."""
