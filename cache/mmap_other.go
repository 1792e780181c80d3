//go:build !unix

package cache

// MapFile reads a named file whole where memory maps are not available here.
func (s *Store) MapFile(name string) (data []byte, unmap func(), err error) {
	data, err = s.ReadFile(name)
	if err != nil {
		return nil, nil, err
	}
	return data, func() {}, nil
}
